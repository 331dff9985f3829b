from .dense_coco_evaluation import DenseCOCOEvaluator, paper_metric_names, paper_metrics
from .error_anatomy import ERROR_KINDS, classify_detections, error_anatomy, matched_edge_offsets

__all__ = [
    "DenseCOCOEvaluator",
    "paper_metric_names",
    "paper_metrics",
    "ERROR_KINDS",
    "classify_detections",
    "error_anatomy",
    "matched_edge_offsets",
]
