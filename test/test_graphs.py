"""The sparse CUDA graph's plumbing and its first-replay check, on what a CPU can run.

Capture and replay need a GPU (tools/gpu_check.py); here: the function the graph would capture gives
the predictor's output, GraphedFunction runs eagerly off CUDA, and its replay-vs-eager comparison
accepts equal outputs and refuses different ones with a reason.
"""
import numpy as np
import torch

from panoptic_ros.model.evaluation import synthetic_frames
from panoptic_ros.model.graphs import GraphedFunction, _Captured
from panoptic_ros.model.predictor import Predictor
from panoptic_ros.pipeline import default_model_path


def test_the_captured_function_gives_the_predictors_output():
    ref = Predictor.from_file(default_model_path(), device="cpu")
    p = Predictor(ref.model, ref.card, device="cpu", detection_mode="static", fusion_mode="batch", sparse_graph=True)
    h, w = ref.input_size  # frames at the network's own size, so the dense part can be fed them directly
    frames = [f.image for f in synthetic_frames(100_950, 2, 1, h, w)]
    x = p.model.normalize(torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames]))
    feats, sem = p.dense(x.contiguous(memory_format=torch.channels_last), p.dtype)
    p._graph_sizes = [(2 * h, 2 * w)] * 2  # results at twice the network size, as for larger camera frames
    flat = p.sparse_graph((*feats, sem), key=("test",))
    assert len(flat) == 8 * len(frames) and p.sparse_graph.captured_graphs == 0  # CPU: eager, nothing captured
    got = p._to_host([flat[i * 8:(i + 1) * 8] for i in range(len(frames))])
    big = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in frames]
    want = ref.predict(big)
    assert sum(r.num_instances for r in want) > 5
    for a, b in zip(want, got):
        # The reference ran the network on the downscaled big frame (= the frame itself): same maps.
        np.testing.assert_array_equal(a.class_map, b.class_map)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
        np.testing.assert_array_equal(a.areas_px, b.areas_px)


def test_first_replay_check_accepts_equal_and_refuses_different_outputs():
    out = (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1, 2], [3, 4]], dtype=torch.int32))
    g = GraphedFunction(lambda: out)
    captured = _Captured(graph=None, static_in=(), static_out=tuple(t.clone() for t in out))
    assert g._agrees(captured, ()) and g.fallback_reason is None
    captured.static_out[0][1] += 0.001  # within 1 % of the range
    assert g._agrees(captured, ())
    captured.static_out[1][0, 0] = 9  # an id differs: a quarter of the elements
    assert not g._agrees(captured, ()) and "output 1 disagreed" in g.fallback_reason
    wrong_shape = _Captured(graph=None, static_in=(), static_out=(out[0][:2], out[1]))
    assert not g._agrees(wrong_shape, ()) and "eager's" in g.fallback_reason
