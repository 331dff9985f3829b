"""
Scoring whole-photo predictors on labelled datasets with the project's evaluator: the shared body
of tools/benchmark_tiling.py, benchmark_counting.py, rescoring_experiment.py and
analyze_errors.py.
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import setup_logger

from ..data.image_reader import read_shelf_image
from ..engine.project_config import get_project_cfg
from ..evaluation import DenseCOCOEvaluator, paper_metrics
from ..shelves import register_retail_dataset

__all__ = [
    "photo_experiment_cfg",
    "photo_experiment_parser",
    "predict_records",
    "register_labelled_photos",
    "score_detections",
    "write_table",
]


def photo_experiment_parser(doc: str) -> argparse.ArgumentParser:
    """
    The arguments every photo experiment takes: the model (config and weights), the tobacco
    photos' folder, a thread count and where to write the table. ``doc`` is the tool's docstring;
    its first paragraph becomes the description.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--tobacco-root", default="../shared/data/tobacco_shelves")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--table")
    return ap


def photo_experiment_cfg(args: argparse.Namespace):
    """Logging, the thread count and the model's config on the CPU, from those arguments."""
    setup_logger(name="gaussian_retina")
    torch.set_num_threads(args.num_threads)
    return get_project_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu"])


def register_labelled_photos(name: str, root: str) -> str:
    """
    Registers ``root``/images with ``root``/annotations.csv (the layout of ../shared/data's photo
    sets) as ``name``, unless it is registered already. Returns ``name``.
    """
    if name not in DatasetCatalog.list():
        root = Path(root)
        register_retail_dataset(name, str(root / "images"), str(root / "annotations.csv"))
    return name


def write_table(lines: Sequence[str], path: Optional[str] = None) -> str:
    """Prints a Markdown table given as lines and, with ``path``, writes it there too."""
    table = "\n".join(lines)
    print(table)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(table + "\n")
    return table


def predict_records(
    predict: Callable[[List[np.ndarray]], list],
    records: Sequence[Dict],
    input_format: str = "BGR",
    batch_size: int = 1,
) -> Tuple[list, List[float]]:
    """
    Runs ``predict`` (images -> one result per image) over dataset records, timing it.

    Returns:
        the results, in record order; seconds of ``predict`` per image (a batch's time shared
        by its images; reading the photos is not counted).
    """
    results, seconds = [], []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        images = [read_shelf_image(r, input_format) for r in batch]
        t0 = time.perf_counter()
        out = predict(images)
        dt = time.perf_counter() - t0
        results.extend(out)
        seconds.extend([dt / len(batch)] * len(batch))
    return results, seconds


def score_detections(
    dataset_name: str, detections: Sequence[Tuple], max_dets: int = 300, output_dir=None
) -> Dict[str, float]:
    """
    Args:
        detections: per record of ``dataset_name``, in order: (boxes (N, 4) XYXY in the image's
            pixels, scores (N,), classes (N,)).
    Returns:
        the paper's columns (AP, AP50, AP75, AR300, AR300@50), percent, from
        :class:`DenseCOCOEvaluator` at ``max_dets`` detections per image.
    """
    records = DatasetCatalog.get(dataset_name)
    if len(records) != len(detections):
        raise ValueError(
            f"{dataset_name} has {len(records)} images, got {len(detections)} predictions"
        )
    if output_dir is None:
        # COCOEvaluator converts a non-COCO dataset into a json under output_dir.
        output_dir = tempfile.mkdtemp(prefix="gaussian_retina_eval_")
    evaluator = DenseCOCOEvaluator(
        dataset_name, distributed=False, output_dir=output_dir, max_dets_per_image=max_dets
    )
    evaluator.reset()
    for r, (boxes, scores, classes) in zip(records, detections):
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)))
        inst.scores = torch.as_tensor(np.asarray(scores, np.float32))
        inst.pred_classes = torch.as_tensor(np.asarray(classes, np.int64))
        evaluator.process(
            [{"image_id": r["image_id"], "height": r["height"], "width": r["width"]}],
            [{"instances": inst}],
        )
    return paper_metrics(evaluator.evaluate().get("bbox", {}), max_dets)
