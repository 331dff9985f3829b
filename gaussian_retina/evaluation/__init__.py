from .dense_coco_evaluation import DenseCOCOEvaluator, paper_metric_names, paper_metrics

__all__ = ["DenseCOCOEvaluator", "paper_metric_names", "paper_metrics"]
