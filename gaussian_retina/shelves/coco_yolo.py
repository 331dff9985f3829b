"""
The two general formats a user's own shelves may come in: a COCO detection json, and a YOLO
label folder (one ``<image stem>.txt`` per image, rows ``class cx cy w h`` normalised to the
image). Both are read into a :class:`BoxTable`; all categories become the one "object" class.
Detectron2 dataset dicts are written back out as a YOLO folder for YOLO tools.
"""

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from detectron2.structures import BoxMode
from PIL import Image

from ..data.image_reader import BadImageError, exif_orientation, read_image_size
from .bad_input import AnnotationError, InputReport
from .box_table import BoxTable
from .retail_csv import DECIMAL_NUMBER

__all__ = ["IMAGE_EXTENSIONS", "parse_coco_json", "parse_yolo_labels", "write_yolo_split", "yolo_label_rows"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_coco_json(path: str):
    """The "images" and "annotations" lists of a COCO json, or an error naming the problem."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg})"
        ) from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 JSON text ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(f"{path}: not a COCO detection json (no 'images' list)")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError(f"{path}: 'annotations' is not a list")
    return data["images"], anns


def _image_entry_problem(im, index_of_id):
    """(problem or None, height, width) of one entry of "images"; NaN sizes: not recorded."""
    problem, h, w = None, None, None
    if not isinstance(im, dict):
        problem = f"not an object: {str(im)[:40]}"
    elif not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
        problem = f"id {im.get('id')!r} is not an integer"
    elif not isinstance(im.get("file_name"), str) or not im["file_name"]:
        problem = f"file_name {im.get('file_name')!r} is not a file name"
    elif im["id"] in index_of_id:
        problem = f"duplicate image id {im['id']}"
    else:
        h, w = im.get("height"), im.get("width")
        if h is None and w is None:
            h = w = math.nan  # read from the file later
        elif not (_number(h) and _number(w) and h >= 1 and w >= 1):
            problem = f"height/width {h!r}/{w!r} are not positive numbers"
    return problem, h, w


def parse_coco_json(path: str, report: InputReport) -> BoxTable:
    """
    Parse the "images" and "annotations" of a COCO json. Image ids are kept as written.
    Problems are located by list index: "images[3]" / "annotation index 12".
    """
    images, anns = _read_coco_json(path)

    names, ids, hw = [], [], []
    index_of_id = {}
    for i, im in enumerate(images):
        problem, h, w = _image_entry_problem(im, index_of_id)
        if problem:
            report.add("malformed image entry", path, [i], [problem], unit="images index")
            continue
        index_of_id[im["id"]] = len(names)
        names.append(im["file_name"])
        ids.append(im["id"])
        hw.append((h, w))

    box_image, boxes, locs, crowd = [], [], [], []
    bad = {"unknown image id": ([], []), "malformed bbox": ([], [])}
    for i, a in enumerate(anns):
        image_id = a.get("image_id") if isinstance(a, dict) else None
        if (
            not isinstance(image_id, int)
            or isinstance(image_id, bool)
            or (image_id not in index_of_id)
        ):
            got = a.get("image_id") if isinstance(a, dict) else a
            bad["unknown image id"][0].append(i)
            bad["unknown image id"][1].append(f"image_id {str(got)[:40]}")
            continue
        b = a.get("bbox")
        if not (isinstance(b, list) and len(b) == 4 and all(map(_number, b))):
            bad["malformed bbox"][0].append(i)
            bad["malformed bbox"][1].append(f"bbox {str(b)[:60]}, expected [x, y, w, h]")
            continue
        box_image.append(index_of_id[a["image_id"]])
        boxes.append((b[0], b[1], b[0] + b[2], b[1] + b[3]))
        locs.append(i)
        crowd.append(1 if a.get("iscrowd") else 0)
    for reason, (where, details) in bad.items():
        report.add(reason, path, where, details, unit="annotation index")

    return BoxTable(
        sources=[path],
        unit="annotation index",
        image_names=names,
        image_ids=np.asarray(ids, dtype=np.int64),
        image_hw=np.asarray(hw, dtype=np.float64).reshape(-1, 2),
        box_image=np.asarray(box_image, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        box_loc=np.asarray(locs, dtype=np.int64),
        box_src=np.zeros(len(locs), dtype=np.int64),
        iscrowd=np.asarray(crowd, dtype=np.int64),
    )


def _walk(root: str, extensions) -> List[str]:
    """Relative paths of the files under root whose name ends with one of extensions."""
    out = []
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in files:
            if f.lower().endswith(extensions):
                out.append(f if rel == "." else os.path.join(rel, f))
    return sorted(out)


def _yolo_boxes(rows, h, w, path: str, report: InputReport):
    """
    (line, XYXY box in pixels) of each well-formed row of one label file, the file's image being
    ``h`` x ``w``; malformed rows are reported.
    """
    wrong, nonnum, out = ([], []), ([], []), []
    for n, row in rows:
        fields = row.split()
        if len(fields) != 5:
            wrong[0].append(n)
            wrong[1].append(f"{len(fields)} fields, expected 5 (class cx cy w h)")
            continue
        if not all(DECIMAL_NUMBER.fullmatch(x) for x in fields) or not all(
            math.isfinite(float(x)) for x in fields
        ):
            nonnum[0].append(n)
            nonnum[1].append(row.decode("utf-8", "backslashreplace")[:60])
            continue
        _, cx, cy, bw, bh = map(float, fields)
        box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
        out.append((n, box))
    report.add("wrong column count", path, wrong[0], wrong[1])
    report.add("non-numeric field", path, nonnum[0], nonnum[1])
    return out


def parse_yolo_labels(
    label_dir: str, image_root: str, report: InputReport, *, apply_exif: bool = True
) -> BoxTable:
    """
    Parse a YOLO label folder against its image folder (same relative paths, ``.txt`` for the
    image's extension). Images without a label file are backgrounds (kept, no boxes).
    Normalised coordinates are scaled by the image size read from the header, after EXIF
    orientation by default, as YOLO tools do. A top-level ``classes.txt`` is not a label file.
    Image ids: 1-based rank of the image's relative path.
    """
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(f"YOLO label folder not found: {label_dir}")
    images = _walk(image_root, IMAGE_EXTENSIONS) if os.path.isdir(image_root) else []
    image_of_stem = {os.path.splitext(p)[0]: i for i, p in enumerate(images)}
    labels = [p for p in _walk(label_dir, (".txt",)) if p != "classes.txt"]
    hw = np.full((len(images), 2), np.nan)
    sources, box_image, boxes, locs, srcs = [], [], [], [], []

    for label in labels:
        path = os.path.join(label_dir, label)
        with open(path, "rb") as f:
            rows = f.read().split(b"\n")
        rows = [(n, r) for n, r in enumerate(rows, 1) if r.strip()]
        if not rows:
            continue  # an empty label file is a background image
        src = len(sources)
        sources.append(path)
        img = image_of_stem.get(os.path.splitext(label)[0])
        lines = [n for n, _ in rows]
        if img is None:
            report.add(
                "image named but missing",
                path,
                lines,
                [f"no image {os.path.splitext(label)[0]}.* in {image_root}"],
                grouped=True,
            )
            continue
        try:
            h, w = read_image_size(os.path.join(image_root, images[img]), apply_exif=apply_exif)
        except BadImageError as e:
            report.add("unreadable image", path, lines, [str(e)], grouped=True)
            continue
        hw[img] = (h, w)
        for n, box in _yolo_boxes(rows, h, w, path, report):
            box_image.append(img)
            boxes.append(box)
            locs.append(n)
            srcs.append(src)

    ids = np.arange(1, len(images) + 1, dtype=np.int64)
    return BoxTable(
        sources=sources or [label_dir],
        unit="line",
        image_names=images,
        image_ids=ids,
        image_hw=hw,
        box_image=np.asarray(box_image, dtype=np.int64),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        box_loc=np.asarray(locs, dtype=np.int64),
        box_src=np.asarray(srcs, dtype=np.int64),
    )


def yolo_label_rows(record: Dict) -> List[str]:
    """
    A Detectron2 dataset dict's boxes as YOLO rows ``0 cx cy w h``, normalised to the record's
    size, clipped to the image; crowd boxes and boxes empty after clipping are left out.
    """
    h, w = float(record["height"]), float(record["width"])
    rows = []
    for a in record.get("annotations", []):
        if a.get("iscrowd", 0):
            continue
        x1, y1, x2, y2 = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
        x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
        y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
        if x2 > x1 and y2 > y1:
            rows.append(
                f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
    return rows


def write_yolo_split(records: Sequence[Dict], root: str, split: str) -> Tuple[int, int]:
    """
    Write dataset dicts as the YOLO layout: ``root/images/<split>/<name>`` (symlinks to the
    images) and ``root/labels/<split>/<stem>.txt`` (:func:`yolo_label_rows`), which
    :func:`parse_yolo_labels` reads back. Returns the number of images and boxes written.

    YOLO readers apply EXIF orientation, so a record whose boxes fit the stored pixels
    (``apply_exif`` False) of a photo carrying a rotation tag is refused rather than written
    with boxes that would not fit.
    """
    image_dir, label_dir = Path(root) / "images" / split, Path(root) / "labels" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    names = [os.path.basename(r["file_name"]) for r in records]
    if len(set(names)) != len(names):
        raise ValueError(f"{split}: image file names are not unique; cannot write them flat")
    num_boxes = 0
    for r, name in zip(records, names):
        if r.get("apply_exif", True) is False:
            with Image.open(r["file_name"]) as im:
                if exif_orientation(im) != 1:
                    raise ValueError(f"{r['file_name']}: EXIF-rotated image; boxes fit raw pixels")
        link, target = image_dir / name, os.path.abspath(r["file_name"])
        if link.is_symlink() and os.readlink(link) != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target)
        rows = yolo_label_rows(r)
        (label_dir / (os.path.splitext(name)[0] + ".txt")).write_text("\n".join(rows) + "\n")
        num_boxes += len(rows)
    return len(records), num_boxes
