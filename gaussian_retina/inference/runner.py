"""
A prediction run over folders of photos (the body of ``gaussian-retina-predict``), and the labelled
reference set that calibrates its counts and gives the training scale.
"""

import glob
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from tqdm import tqdm  # a dependency of Detectron2

from ..data.image_reader import BadImageError, read_shelf_image
from .calibration import calibrate_counts
from .counting import count_detections, count_map_mass, count_map_peaks
from .overlay import draw_overlay, save_png
from .predictor import ShelfPredictor
from .run_outputs import RunOutputs
from .tiling import single_pass_scale

__all__ = [
    "IMAGE_EXTENSIONS",
    "calibrate_counts",
    "find_images",
    "input_root",
    "output_names",
    "photo_counts",
    "products_per_image",
    "run_prediction",
    "training_product_side",
]

logger = logging.getLogger("gaussian_retina.predict")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(inputs: Sequence[str]) -> List[str]:
    """
    Photos from files, folders (their image files, recursively) and glob patterns, in order,
    without repeats. A file named explicitly is kept whatever its extension (it is reported if
    unreadable); an input that matches nothing raises, naming it. The other files a folder
    holds (a ``.gif``, a phone's ``.heic``, labels; hidden files aside) are named in one warning,
    so that no photo is left out unseen.
    """
    found, passed_over = [], []
    for spec in inputs:
        if os.path.isdir(spec):
            files = []
            for p in sorted(Path(spec).rglob("*"), key=str):
                if not p.is_file():
                    continue
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(str(p))
                elif not any(part.startswith(".") for part in p.relative_to(spec).parts):
                    passed_over.append(str(p))
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
    if passed_over:
        by_ext = Counter(Path(f).suffix.lower() or "no extension" for f in passed_over)
        kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(by_ext.items()))
        logger.warning(
            f"left out {len(passed_over)} file(s) that are not photos by their extension ({kinds};"
            f" e.g. {passed_over[0]}); read are {' '.join(IMAGE_EXTENSIONS)}, or name a file to"
            " read it"
        )
    return list(dict.fromkeys(found))


def _root_of(spec: str) -> str:
    """The folder an input spec's photos are named under."""
    if os.path.isdir(spec):
        return spec
    if os.path.isfile(spec) or not glob.has_magic(spec):
        return os.path.dirname(spec) or "."
    head = spec
    while glob.has_magic(head):
        head = os.path.dirname(head)
    return head or "."


def input_root(inputs: Sequence[str]) -> str:
    """The deepest folder holding every input (a folder, a file's folder, a glob's fixed part)."""
    return os.path.commonpath([os.path.abspath(_root_of(s)) for s in inputs])


def output_names(files: Sequence[str], root: str) -> List[Tuple[str, str]]:
    """
    Per photo: (name, image name). The image name is its path under ``root`` ("s1/IMG_1.jpg",
    with "/" on every system); the name is the same without the extension ("s1/IMG_1"), or with
    it where two photos differ only by their extension. Both are distinct for distinct files,
    so no output is ever written over another's.
    """
    image_names = [Path(os.path.relpath(os.path.abspath(f), root)).as_posix() for f in files]
    stems = [str(Path(n).with_suffix("")) for n in image_names]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [(n if s in repeated else s, n) for s, n in zip(stems, image_names)]


def products_per_image(dataset_name: str) -> float:
    """Mean labelled products per image of a registered dataset."""
    records = DatasetCatalog.get(dataset_name)
    if not records:
        raise ValueError(f"{dataset_name} has no images")
    return float(np.mean([len(r.get("annotations", [])) for r in records]))


def training_product_side(dataset_name: str, input_size: Tuple[int, int]) -> float:
    """
    The median product side (sqrt of the box area) of a labelled set, in input pixels: each
    image as the test resize to ``input_size`` (short, long) presents it. For a set at the
    training scale, the product size the model learned.
    """
    records = DatasetCatalog.get(dataset_name)
    sides = []
    for r in records:
        scale = single_pass_scale((r["height"], r["width"]), input_size)
        for a in r.get("annotations", []):
            _, _, w, h = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYWH_ABS)
            sides.append(np.sqrt(max(w, 0) * max(h, 0)) * scale)
    if not sides:
        raise ValueError(f"{dataset_name} has no labelled products")
    return float(np.median(sides))


def photo_counts(
    pred,
    count_threshold: float,
    peak_threshold: Optional[float],
    template_size: int = 120,
    sigma: float = 40.0,
) -> Dict[str, float]:
    """
    Counts of one :class:`Prediction`: ``products``, the count the command reports, and each
    method's: detections at the threshold (over all merged detections, not only those under the
    photo's detection cap), and, with a map, its peaks (when ``peak_threshold`` is given) and
    its mass. ``products`` is the peaks' count where there is one, else the detections'
    (:data:`~.counting.DEFAULT_PEAK_THRESHOLD` says why).
    """
    scores = pred.all_scores if pred.all_scores is not None else pred.scores
    counts = {"detections": count_detections(scores, count_threshold)}
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
    counts["products"] = counts.get("map_peaks", counts["detections"])
    return counts


def run_prediction(
    predictor: ShelfPredictor,
    files: Sequence[str],
    output_dir: str,
    *,
    names: Optional[Sequence[Tuple[str, str]]] = None,
    input_format: str = "BGR",
    apply_exif: bool = True,
    class_names: Sequence[str] = ("object",),
    count_calibration: Dict,
    conf: Optional[float] = None,
    template_size: int = 120,
    sigma: float = 40.0,
    overlay: bool = False,
    overlay_max_side: int = 1024,
    progress: bool = True,
    run_info: Optional[Dict] = None,
) -> Dict:
    """
    Predicts every photo of ``files`` and writes the files of :class:`RunOutputs` under
    ``output_dir`` as it goes, plus ``overlays/<name>.png`` with ``overlay``. Photos the
    folder's journal lists as done are skipped: the same call after a crash or a kill resumes
    the run, and ends with the files an uninterrupted run writes.

    A photo that cannot be read is logged by name and skipped; the run goes on.

    Args:
        names: per photo, (name, image name) from :func:`output_names`; default: under the
            photos' common folder.
        apply_exif: read photos in their EXIF orientation (as Detectron2's ``read_image``); the
            boxes and image sizes written are then those of the oriented photo.
        count_calibration: from :func:`calibrate_counts` (or a user's threshold).
        conf: detections written are those scoring at least this (default: the count
            threshold, so that the files hold the boxes counted); counts do not depend on it.
        run_info: the run's settings: a rerun on the same folder must give the same, and they
            are written to summary.json.
    """
    if names is None:
        names = output_names(files, input_root(files) if files else ".")
    thr, peak_thr = count_calibration["count_threshold"], count_calibration.get("peak_threshold")
    conf = thr if conf is None else conf
    settings = dict(run_info or {})
    settings.update(conf=conf, count_threshold=thr, peak_threshold=peak_thr)
    outputs = RunOutputs(output_dir, settings, class_names)
    summary_info = dict(settings, count_calibration=count_calibration)
    all_names = [n for n, _ in names]
    todo = [(f, n) for f, n in zip(files, names) if not outputs.done(n[0])]
    if len(todo) < len(files):
        logger.info(f"Resuming: {len(files) - len(todo)} of {len(files)} photos already done")
    if overlay:
        (Path(output_dir) / "overlays").mkdir(exist_ok=True)
    bar = tqdm(
        total=len(files),
        initial=len(files) - len(todo),
        unit="photo",
        disable=not progress,
        dynamic_ncols=True,
    )
    for g in range(0, len(todo), predictor.batch_size):
        t0 = time.perf_counter()
        group, images = _read_photos(todo[g : g + predictor.batch_size], apply_exif, input_format)
        for f, (name, image_name), error in group:
            if error is not None:
                logger.warning(f"skipped, unreadable: {error}")  # the message names the file
                outputs.add_photo(
                    {"name": name, "image_name": image_name, "file": f, "skipped": str(error)}
                )
                bar.update(1)
        group = [(f, name, image_name) for f, (name, image_name), error in group if error is None]
        preds = predictor(images) if images else []
        seconds = round((time.perf_counter() - t0) / max(len(group), 1), 3)  # shared by a batch
        for (f, name, image_name), image, pred in zip(group, images, preds):
            shown = pred.scores >= conf
            if overlay:
                rgb = image[:, :, ::-1] if input_format == "BGR" else image
                path = Path(output_dir) / "overlays" / f"{name}.png"
                _write_overlay(rgb, pred, thr, path, overlay_max_side)
            counts = photo_counts(pred, thr, peak_thr, template_size, sigma)
            outputs.add_photo(
                {
                    "name": name,
                    "image_name": image_name,
                    "file": f,
                    "image_size": list(pred.image_size),
                    "tiling": pred.grid.describe(),
                    "detections": int(shown.sum()),
                    "count": counts,
                    "seconds": seconds,
                    "boxes": pred.boxes[shown],
                    "scores": pred.scores[shown],
                    "classes": pred.classes[shown],
                }
            )
            bar.update(1)
            bar.set_postfix(products=counts["products"])
        outputs.checkpoint(all_names, summary_info)
    bar.close()
    return outputs.finish(all_names, summary_info)


def _read_photos(todo, apply_exif: bool, input_format: str):
    """
    Reads a batch of (file, (name, image name)): per photo (file, names, the error or None),
    and the images read, in order.
    """
    group, images = [], []
    for f, names in todo:
        try:
            images.append(read_shelf_image({"file_name": f, "apply_exif": apply_exif}, input_format))
            group.append((f, names, None))
        except (BadImageError, OSError) as e:
            group.append((f, names, e))
    return group, images


def _write_overlay(rgb, pred, threshold: float, path: Path, max_side: int) -> None:
    """The photo's boxes scoring at least ``threshold`` beside its Gaussian map, as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay = draw_overlay(
        np.ascontiguousarray(rgb), pred.boxes[pred.scores >= threshold], pred.gaussian_map, max_side
    )
    save_png(overlay, path, max_bytes=500_000)
