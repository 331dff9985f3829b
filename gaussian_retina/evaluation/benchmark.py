"""
Evaluating one model on several registered datasets with :class:`DenseCOCOEvaluator`, shared by
``tools/benchmark_datasets.py`` (a Detectron2 model on every test set) and
``tools/benchmark_yolo_peer.py`` (a peer detector wrapped as a Detectron2 model).
"""

import logging
import os
from collections import OrderedDict

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset

from ..data import ShelfDatasetMapper
from .dense_coco_evaluation import DenseCOCOEvaluator, paper_metrics

__all__ = ["evaluate_all", "subset"]

logger = logging.getLogger("gaussian_retina.benchmark")


def subset(name, max_images):
    """
    Registers and returns ``name`` cut to its first ``max_images`` images. Its ground truth is
    the subset's own, so unseen images do not count as misses.
    """
    if not max_images:
        return name
    sub = f"{name}_first{max_images}"
    if sub not in DatasetCatalog.list():
        DatasetCatalog.register(sub, lambda: DatasetCatalog.get(name)[:max_images])
        meta = MetadataCatalog.get(name)
        MetadataCatalog.get(sub).set(
            **{k: v for k, v in meta.as_dict().items() if k not in ("name", "json_file")}
        )
    return sub


def evaluate_all(cfg, model, names, output_dir, max_images=None):
    """
    Runs ``model`` (anything ``inference_on_dataset`` accepts: it gets the batches of cfg's test
    mapper, ``ShelfDatasetMapper(cfg, is_train=False)``, and returns Detectron2 outputs) on each
    dataset of ``names`` and scores it with :class:`DenseCOCOEvaluator` at
    ``cfg.TEST.DETECTIONS_PER_IMAGE`` detections per image.

    Returns:
        OrderedDict[str, OrderedDict[str, float]]: dataset -> the paper's columns (percent).
        OrderedDict[str, str]: dataset -> why it could not be evaluated.
    """
    rows, missing = OrderedDict(), OrderedDict()
    max_dets = cfg.TEST.DETECTIONS_PER_IMAGE
    for i, name in enumerate(names, 1):
        try:
            if name not in DatasetCatalog.list():
                raise KeyError("not registered")
            num_images = len(DatasetCatalog.get(name))
            if num_images == 0:
                raise ValueError("no images")
        except (OSError, KeyError, ValueError) as e:
            missing[name] = f"{type(e).__name__}: {e}"
            logger.warning(f"[{i}/{len(names)}] {name}: missing ({missing[name]})")
            continue
        eval_name = subset(name, max_images)
        num_eval = len(DatasetCatalog.get(eval_name))
        logger.info(f"[{i}/{len(names)}] {name}: {num_eval} of {num_images} images")
        loader = build_detection_test_loader(
            cfg, eval_name, mapper=ShelfDatasetMapper(cfg, is_train=False)
        )
        evaluator = DenseCOCOEvaluator(
            eval_name,
            distributed=False,
            output_dir=os.path.join(output_dir, eval_name),
            max_dets_per_image=max_dets,
        )
        results = inference_on_dataset(model, loader, evaluator)  # logs its own progress
        rows[name] = paper_metrics(results.get("bbox", {}), max_dets)
    return rows, missing
