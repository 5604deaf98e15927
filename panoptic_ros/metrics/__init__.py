"""Evaluation metrics, each checked against its reference implementation in the tests.

- :mod:`~panoptic_ros.metrics.pq`: PQ / SQ / RQ as panopticapi, mIoU, and bootstrap intervals of PQ.
- :mod:`~panoptic_ros.metrics.video`: VPQ (Cityscapes-VPS) and STQ (deeplab2).
- :mod:`~panoptic_ros.metrics.mot`: MOTA / MOTP / IDF1 / ID switches (py-motmetrics),
  HOTA (TrackEval), and ID switches across occlusion events.

Pure numpy (scipy for the assignment problems of the MOT metrics); no ROS.
"""
from panoptic_ros.metrics.mot import (
    HOTA_ALPHAS,
    ClearMOTResult,
    EventOutcome,
    EventSwitchResult,
    HOTAResult,
    IdentityResult,
    OcclusionEvent,
    TrackingFrame,
    TrackingResult,
    bootstrap_idf1_difference,
    box_iou_matrix,
    clear_mot_matches,
    combine_tracking_results,
    evaluate_tracking,
    id_switches_in_events,
    mask_iou_matrix,
)
from panoptic_ros.metrics.pq import (
    AreaResult,
    AreaRow,
    MIoUAccumulator,
    MIoUResult,
    PQAccumulator,
    PQClassResult,
    PQCounts,
    PQGroupResult,
    PQInterval,
    PQResult,
    bootstrap_pq,
    bootstrap_pq_difference,
    thing_mask,
)
from panoptic_ros.metrics.video import (
    STQAccumulator,
    STQResult,
    STQSequenceResult,
    VPQAccumulator,
    VPQResult,
)

__all__ = [
    "HOTA_ALPHAS", "ClearMOTResult", "EventOutcome", "EventSwitchResult", "HOTAResult", "IdentityResult",
    "OcclusionEvent", "TrackingFrame", "TrackingResult", "bootstrap_idf1_difference", "box_iou_matrix",
    "clear_mot_matches", "combine_tracking_results", "evaluate_tracking", "id_switches_in_events", "mask_iou_matrix",
    "AreaResult", "AreaRow", "MIoUAccumulator", "MIoUResult", "PQAccumulator", "PQClassResult", "PQCounts",
    "PQGroupResult", "PQInterval", "PQResult", "bootstrap_pq", "bootstrap_pq_difference",
    "thing_mask",
    "STQAccumulator", "STQResult", "STQSequenceResult", "VPQAccumulator", "VPQResult",
]
