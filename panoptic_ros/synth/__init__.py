"""Procedural driving scenes with exact panoptic ground truth and scripted occlusions.

A small 3D world (street layout, buildings, props, traffic, pedestrians, cyclists,
an ego camera driving through it) is simulated per sequence and rasterised with a
painter's algorithm, so images, semantic/instance labels, visibility and occlusion
events all come from the same polygons.

    cfg = SynthConfig(height=512, width=1024)
    seq = SyntheticSequence(seed=7, num_frames=200, config=cfg)
    frame = seq.render(10)             # PanopticFrame
    events = seq.occlusion_events()    # full occlusions behind buses/trucks, with re-emergence
"""
from panoptic_ros.synth.render import OcclusionEvent, SyntheticSequence, generate_sequence
from panoptic_ros.synth.world import SynthConfig

__all__ = ["OcclusionEvent", "SynthConfig", "SyntheticSequence", "generate_sequence"]
