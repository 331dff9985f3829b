"""
The count threshold of a model, calibrated on a labelled set and cached: keyed by the weights
(path, size, modification time), the dataset (name, images, boxes) and the predictor's settings,
so a second run of the predict command starts at once.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Optional

from detectron2.data import DatasetCatalog
from tqdm import tqdm  # a dependency of Detectron2

from ..data.image_reader import read_shelf_image
from .counting import calibrate_threshold, count_detections, count_map_peaks

__all__ = ["calibrate_counts", "calibration_cache_dir"]

logger = logging.getLogger("gaussian_retina.predict")


def calibration_cache_dir() -> Path:
    """``$GAUSSIAN_RETINA_CACHE``, else ``~/.cache/gaussian_retina``."""
    return Path(os.environ.get("GAUSSIAN_RETINA_CACHE") or Path.home() / ".cache" / "gaussian_retina")


def _cache_key(predictor, dataset_name: str, records, weights: Optional[str]) -> str:
    w = Path(weights) if weights else None
    key = {
        # A local checkpoint by its file; anything else (a URL, a model zoo name) by its name.
        "weights": (
            [str(w.resolve()), w.stat().st_size, w.stat().st_mtime_ns]
            if w and w.is_file()
            else weights
        ),
        "dataset": [
            dataset_name,
            len(records),
            sum(len(r.get("annotations", [])) for r in records),
            [r["file_name"] for r in records[:1] + records[-1:]],
        ],
        "predictor": predictor.settings(),
        "version": 3,
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibrate_counts(
    predictor,
    dataset_name: str,
    input_format: str,
    *,
    weights: Optional[str] = None,
    cache_dir=None,
    progress: bool = True,
) -> Dict:
    """
    Runs ``predictor`` on a labelled set and picks the detection-score threshold (and, for
    models with a Gaussian branch, the peak height) that minimise count MAE there. With
    ``weights`` (the checkpoint's path) the result is cached under ``cache_dir`` (default
    :func:`calibration_cache_dir`); a cached result is returned without predicting.

    Returns:
        {"dataset", "images", "count_threshold", "count_mae", "peak_threshold", "peak_mae",
        "cached"}.
    """
    records = DatasetCatalog.get(dataset_name)
    if not records:
        raise ValueError(f"the calibration set {dataset_name} has no images")
    cache_file = None
    if weights:
        cache_file = Path(cache_dir or calibration_cache_dir()) / (
            f"calibration-{_cache_key(predictor, dataset_name, records, weights)}.json"
        )
        if cache_file.is_file():
            out = json.loads(cache_file.read_text())
            out["cached"] = True
            logger.info(f"Count calibration on {dataset_name} read from {cache_file}")
            return out
    scores, maps, true = [], [], []
    bar = tqdm(
        total=len(records),
        unit="image",
        desc=f"calibrating on {dataset_name}",
        disable=not progress,
        dynamic_ncols=True,
    )
    for start in range(0, len(records), predictor.batch_size):
        batch = records[start : start + predictor.batch_size]
        preds = predictor([read_shelf_image(r, input_format) for r in batch])
        for r, p in zip(batch, preds):
            scores.append(p.all_scores)
            maps.append(p.gaussian_map)
            true.append(len(r.get("annotations", [])))
        bar.update(len(batch))
    bar.close()
    thr, mae = calibrate_threshold(scores, true, count_detections)
    out = {
        "dataset": dataset_name,
        "images": len(records),
        "count_threshold": thr,
        "count_mae": round(mae, 3),
        "peak_threshold": None,
        "peak_mae": None,
    }
    if all(m is not None for m in maps):
        pthr, pmae = calibrate_threshold(maps, true, count_map_peaks)
        out.update(peak_threshold=pthr, peak_mae=round(pmae, 3))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(out, indent=1))
    out["cached"] = False
    return out
