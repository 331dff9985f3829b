"""
A prediction run over folders of photos (the body of ``gaussian-retina-predict``), and the labelled
reference set that calibrates its counts and gives the training scale.
"""

import csv
import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog
from tqdm import tqdm  # a dependency of Detectron2

from ..data.image_reader import BadImageError, read_shelf_image
from .counting import (
    calibrate_threshold,
    count_detections,
    count_map_mass,
    count_map_peaks,
)
from .overlay import draw_overlay, save_png
from .predictor import ShelfPredictor
from .writers import CocoResultsWriter, write_detections_csv

__all__ = [
    "IMAGE_EXTENSIONS",
    "calibrate_counts",
    "find_images",
    "photo_counts",
    "products_per_image",
    "run_prediction",
]

logger = logging.getLogger("gaussian_retina.predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(inputs: Sequence[str]) -> List[str]:
    """
    Photos from files, folders (their image files, recursively) and glob patterns, in order,
    without repeats. A file named explicitly is kept whatever its extension (it is reported if
    unreadable); an input that matches nothing raises, naming it.
    """
    found = []
    for spec in inputs:
        if os.path.isdir(spec):
            files = sorted(
                str(p)
                for p in Path(spec).rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif os.path.isfile(spec):
            files = [spec]
        else:
            files = sorted(
                f
                for f in glob.glob(spec, recursive=True)
                if os.path.isfile(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS
            )
        if not files:
            raise FileNotFoundError(
                f"{spec}: no such file, or no image files in that folder or pattern"
            )
        found.extend(files)
    return list(dict.fromkeys(found))


def products_per_image(dataset_name: str) -> float:
    """Mean labelled products per image of a registered dataset (the training scale's density)."""
    records = DatasetCatalog.get(dataset_name)
    if not records:
        raise ValueError(f"{dataset_name} has no images")
    return float(np.mean([len(r.get("annotations", [])) for r in records]))


def photo_counts(
    pred,
    count_threshold: float,
    peak_threshold: Optional[float],
    template_size: int = 120,
    sigma: float = 40.0,
) -> Dict[str, float]:
    """
    Counts of one :class:`Prediction`: detections at the threshold, and the map's (peaks when
    ``peak_threshold`` is given, mass) when it has a map.
    """
    counts = {"detections": count_detections(pred.scores, count_threshold)}
    if pred.gaussian_map is not None:
        confident = pred.boxes[pred.scores >= count_threshold]
        areas = (confident[:, 2] - confident[:, 0]) * (confident[:, 3] - confident[:, 1])
        if peak_threshold is not None:
            counts["map_peaks"] = count_map_peaks(pred.gaussian_map, peak_threshold)
        counts["map_mass"] = round(
            count_map_mass(
                pred.gaussian_map, pred.map_stride, areas, template_size=template_size, sigma=sigma
            ),
            1,
        )
    return counts


def calibrate_counts(predictor: ShelfPredictor, dataset_name: str, input_format: str) -> Dict:
    """
    Runs ``predictor`` on a labelled set and picks the detection-score threshold (and, for
    models with a Gaussian branch, the peak height) that minimise count MAE there.

    Returns:
        {"dataset", "images", "count_threshold", "count_mae", "peak_threshold", "peak_mae"}.
    """
    records = DatasetCatalog.get(dataset_name)
    scores, maps, true = [], [], []
    for start in range(0, len(records), predictor.batch_size):
        batch = records[start : start + predictor.batch_size]
        preds = predictor([read_shelf_image(r, input_format) for r in batch])
        for r, p in zip(batch, preds):
            scores.append(p.scores)
            maps.append(p.gaussian_map)
            true.append(len(r.get("annotations", [])))
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
    return out


def _output_names(files: Sequence[str]) -> List[str]:
    """A distinct file stem per photo (photos of the same name in different folders get _2, ...)."""
    seen, names = {}, []
    for f in files:
        stem = Path(f).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def run_prediction(
    predictor: ShelfPredictor,
    files: Sequence[str],
    output_dir: str,
    *,
    input_format: str = "BGR",
    apply_exif: bool = True,
    class_names: Sequence[str] = ("object",),
    count_calibration: Dict,
    template_size: int = 120,
    sigma: float = 40.0,
    overlay: bool = False,
    overlay_max_side: int = 1024,
    progress: bool = True,
    run_info: Optional[Dict] = None,
) -> Dict:
    """
    Predicts every photo of ``files`` and writes, under ``output_dir``:

    * ``detections/<stem>.csv``: :data:`~.writers.CSV_COLUMNS`, one row per detection;
    * ``coco_results.json``: all detections, ``images`` mapping ids to file names;
    * ``counts.csv``: per photo, its product count by each method;
    * ``overlays/<stem>.png`` with ``overlay``;
    * ``summary.json``: the returned summary.

    A photo that cannot be read is logged by name and skipped; the run goes on.

    Args:
        apply_exif: read photos in their EXIF orientation (as Detectron2's ``read_image``); the
            boxes and image sizes written are then those of the oriented photo.
        count_calibration: from :func:`calibrate_counts` (or a user's threshold).
    """
    out = Path(output_dir)
    (out / "detections").mkdir(parents=True, exist_ok=True)
    if overlay:
        (out / "overlays").mkdir(exist_ok=True)
    coco = CocoResultsWriter(class_names)
    names = _output_names(files)
    photos, skipped = [], []
    thr, peak_thr = count_calibration["count_threshold"], count_calibration.get("peak_threshold")
    start_run = time.perf_counter()
    bar = tqdm(total=len(files), unit="photo", disable=not progress, dynamic_ncols=True)
    for g in range(0, len(files), predictor.batch_size):
        t0 = time.perf_counter()
        group, images = [], []
        for f, name in zip(
            files[g : g + predictor.batch_size], names[g : g + predictor.batch_size]
        ):
            try:
                images.append(
                    read_shelf_image({"file_name": f, "apply_exif": apply_exif}, input_format)
                )
                group.append((f, name))
            except (BadImageError, OSError) as e:
                skipped.append({"file": f, "reason": str(e)})
                logger.warning(f"skipped, unreadable: {e}")  # the message names the file
                bar.update(1)
        preds = predictor(images) if images else []
        for (f, name), image, pred in zip(group, images, preds):
            write_detections_csv(
                out / "detections" / f"{name}.csv",
                Path(f).name,
                pred.image_size,
                pred.boxes,
                pred.scores,
                class_names,
                pred.classes,
            )
            coco.add(Path(f).name, pred.image_size, pred.boxes, pred.scores, pred.classes)
            if overlay:
                rgb = image[:, :, ::-1] if input_format == "BGR" else image
                save_png(
                    draw_overlay(
                        np.ascontiguousarray(rgb),
                        pred.boxes[pred.scores >= thr],
                        pred.gaussian_map,
                        overlay_max_side,
                    ),
                    out / "overlays" / f"{name}.png",
                    max_bytes=500_000,
                )
            photos.append(
                {
                    "file": f,
                    "image_size": list(pred.image_size),
                    "tiling": pred.grid.describe(),
                    "detections": int(len(pred.scores)),
                    "count": photo_counts(pred, thr, peak_thr, template_size, sigma),
                }
            )
        seconds = time.perf_counter() - t0
        for p in photos[len(photos) - len(group) :]:
            p["seconds"] = round(seconds / max(len(group), 1), 3)  # the batch's time, shared
        bar.update(len(group))
        if photos:
            bar.set_postfix(products=photos[-1]["count"]["detections"])
    bar.close()
    total = time.perf_counter() - start_run
    coco.save(out / "coco_results.json")
    methods = sorted({m for p in photos for m in p["count"]})
    with open(out / "counts.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name"] + methods)
        for p in photos:
            writer.writerow([Path(p["file"]).name] + [p["count"].get(m, "") for m in methods])
    summary = dict(run_info or {})
    summary.update(
        {
            "photos_done": len(photos),
            "photos_skipped": len(skipped),
            "skipped": skipped,
            "products_total": int(sum(p["count"]["detections"] for p in photos)),
            "seconds_total": round(total, 2),
            "seconds_per_photo": round(total / max(len(photos), 1), 3),
            "count_calibration": count_calibration,
            "photos": photos,
        }
    )
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary
