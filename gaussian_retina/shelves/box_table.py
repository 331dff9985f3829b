"""
The columnar form every annotation parser produces, the checks every format shares
(missing images, sizes, boxes outside the image, clipping), and the conversions to
Detectron2 dataset dicts and to a COCO json dict.

Keeping boxes as numpy columns until the very end is what makes a 1.2-million-row
SKU-110K CSV load in a few seconds.
"""

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from detectron2.structures import BoxMode

from ..data.image_reader import BadImageError, read_image_size
from .bad_input import InputReport

__all__ = ["BoxTable", "clean_table", "table_to_dicts", "THING_CLASSES"]

# Every retail format maps all its labels (SKU-110K "object", TobaccoShelves brand ids, COCO
# categories, YOLO class indices) to one class: the task is generic product detection.
THING_CLASSES = ["object"]
COCO_CATEGORY_ID = 1


@dataclass
class BoxTable:
    """
    Boxes of one annotation source as columns. M images, N boxes.

    Attributes:
        sources: annotation files named in messages; ``box_src`` indexes it.
        unit: what a location is ("line", "annotation id").
        image_names: (M,) file names relative to the image root.
        image_ids: (M,) int64 ids, stable between runs (see each parser).
        image_hw: (M, 2) float64 recorded (height, width); NaN where the source has none.
        box_image: (N,) int64 index into image_names.
        boxes: (N, 4) float64 XYXY in absolute pixels.
        box_loc: (N,) int64 line number (1-based) or entry id of each box.
        box_src: (N,) int64 index into sources.
        iscrowd: (N,) int64, or None for formats without crowd boxes.
    """

    sources: List[str]
    unit: str
    image_names: List[str]
    image_ids: np.ndarray
    image_hw: np.ndarray
    box_image: np.ndarray
    boxes: np.ndarray
    box_loc: np.ndarray
    box_src: np.ndarray
    iscrowd: Optional[np.ndarray] = None

    @property
    def num_images(self) -> int:
        return len(self.image_names)

    @property
    def num_boxes(self) -> int:
        return int(self.box_image.size)

    def box_files(self, mask: np.ndarray) -> List[str]:
        if len(self.sources) == 1:
            return self.sources
        return [self.sources[i] for i in self.box_src[mask]]

    def select_boxes(self, keep: np.ndarray) -> None:
        self.box_image = self.box_image[keep]
        self.boxes = self.boxes[keep]
        self.box_loc = self.box_loc[keep]
        self.box_src = self.box_src[keep]
        if self.iscrowd is not None:
            self.iscrowd = self.iscrowd[keep]

    def select_images(self, keep: np.ndarray) -> None:
        """Keep images where ``keep`` (M,) is true, and their boxes."""
        self.select_boxes(keep[self.box_image])
        new_index = np.cumsum(keep) - 1
        self.box_image = new_index[self.box_image]
        self.image_names = [n for n, k in zip(self.image_names, keep.tolist()) if k]
        self.image_ids = self.image_ids[keep]
        self.image_hw = self.image_hw[keep]


def drop_boxes(table: BoxTable, report: InputReport, bad: np.ndarray, reason: str, details=None):
    """Record the boxes where ``bad`` (N,) is true under ``reason`` and remove them."""
    if not bad.any():
        return
    report.add(reason, table.box_files(bad), table.box_loc[bad], details, unit=table.unit)
    table.select_boxes(~bad)


def _existing(image_root: str, names: List[str]) -> np.ndarray:
    """(M,) bool: which names exist under image_root (one directory listing, not M stats)."""
    try:
        listing = set(os.listdir(image_root))
    except OSError:
        listing = set()
    return np.array(
        [
            (
                (n in listing)
                if ("/" not in n and os.sep not in n)
                else os.path.isfile(os.path.join(image_root, n))
            )
            for n in names
        ],
        dtype=bool,
    )


def _drop_images(table, report, bad_images: np.ndarray, reason: str, detail_of):
    """Drop images where ``bad_images`` (M,) is true with all their boxes, counted."""
    if not bad_images.any():
        return
    rows = bad_images[table.box_image]
    if rows.any():
        # One problem per image (its rows quoted as line ranges), in the order of the file.
        idx = np.flatnonzero(rows)
        order = np.argsort(table.box_image[idx], kind="stable")
        idx = idx[order]
        starts = np.flatnonzero(np.diff(table.box_image[idx], prepend=-1))
        for group in np.split(idx, starts[1:]):
            mask = np.zeros(table.num_boxes, dtype=bool)
            mask[group] = True
            report.add(
                reason,
                table.box_files(mask),
                table.box_loc[group],
                [detail_of(int(table.box_image[group[0]]))],
                unit=table.unit,
                grouped=True,
            )
    report.add_images(reason, int(bad_images.sum()))
    table.select_images(~bad_images)


def clean_table(
    table: BoxTable,
    image_root: str,
    report: InputReport,
    *,
    apply_exif: bool,
    check_image_sizes: bool = True,
    min_box_size: float = 1.0,
) -> BoxTable:
    """
    The checks all formats share, in order; each dropped row is counted under one reason.

    1. "x2 <= x1 or y2 <= y1": a box with no extent as written.
    2. "image named but missing": not found under ``image_root``.
    3. "unreadable image": the header cannot be read, or the file is cut short (a JPEG or
       PNG without its end marker that fails to decode); only where sizes are needed: the
       source records none, or ``check_image_sizes``.
    4. "recorded size disagrees with the file": with ``check_image_sizes``.
    5. "box outside the image": no overlap with the image at all.
    Then boxes partly outside are clipped (counted) and boxes thinner than ``min_box_size``
    pixels after clipping are dropped (counted as degenerate), under either policy.
    Images whose rows were all dropped are dropped (counted); images that never had a box
    (COCO images without annotations, YOLO backgrounds) are kept.
    """
    had_boxes = np.bincount(table.box_image, minlength=table.num_images) > 0
    b = table.boxes
    bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    drop_boxes(
        table,
        report,
        bad,
        "x2 <= x1 or y2 <= y1",
        [f"box {_fmt_box(x)}" for x in b[bad][:20]],
    )

    exists = _existing(image_root, table.image_names)
    _drop_images(
        table,
        report,
        ~exists,
        "image named but missing",
        lambda i: f"{table.image_names[i]!r} not found in {image_root}",
    )
    had_boxes = had_boxes[exists]

    need_size = np.isnan(table.image_hw).any(axis=1)
    if check_image_sizes:
        need_size[:] = True
    unreadable, disagrees, messages = _read_image_sizes(table, image_root, need_size, apply_exif)
    _drop_images(table, report, unreadable, "unreadable image", messages.get)
    had_boxes = had_boxes[~unreadable]
    disagrees = disagrees[~unreadable]
    _drop_images(table, report, disagrees, "recorded size disagrees with the file", messages.get)
    had_boxes = had_boxes[~disagrees]

    _fit_boxes_to_images(table, report, min_box_size)

    # An image that lost every box would now teach "no products here": drop it.
    has_boxes = np.bincount(table.box_image, minlength=table.num_images) > 0
    emptied = had_boxes & ~has_boxes
    report.add_images("image left without boxes", int(emptied.sum()))
    table.select_images(~emptied)

    report.kept_images = table.num_images
    report.kept_boxes = table.num_boxes
    report.background_images = int((~had_boxes[~emptied]).sum())
    return table


def _read_image_sizes(table: BoxTable, image_root: str, need_size, apply_exif: bool):
    """
    Reads the size of each image marked in ``need_size``: it fills a size the source did not
    record, and marks an image unreadable, or whose recorded size disagrees with the file, with
    the message that names it. Returns (unreadable, disagrees, messages by image index).
    """
    unreadable = np.zeros(table.num_images, dtype=bool)
    disagrees = np.zeros(table.num_images, dtype=bool)
    messages = {}
    for i in np.flatnonzero(need_size).tolist():
        path = os.path.join(image_root, table.image_names[i])
        try:
            hw = read_image_size(path, apply_exif=apply_exif, check_complete=True)
        except BadImageError as e:
            unreadable[i] = True
            messages[i] = str(e)
            continue
        rec = table.image_hw[i]
        if np.isnan(rec).any():
            table.image_hw[i] = hw
        elif (int(rec[0]), int(rec[1])) != hw:
            disagrees[i] = True
            messages[i] = (
                f"{table.image_names[i]}: file is {hw[1]}x{hw[0]} (WxH, EXIF "
                f"{'applied' if apply_exif else 'ignored'}), annotations say "
                f"{int(rec[1])}x{int(rec[0])}"
            )
    return unreadable, disagrees, messages


def _fit_boxes_to_images(table: BoxTable, report: InputReport, min_box_size: float) -> None:
    """
    Drops boxes wholly outside their image, clips the rest to it, and drops boxes thinner than
    ``min_box_size`` after clipping; each counted.
    """
    hw = table.image_hw[table.box_image]
    h, w = hw[:, 0], hw[:, 1]
    b = table.boxes
    outside = (b[:, 0] >= w) | (b[:, 1] >= h) | (b[:, 2] <= 0) | (b[:, 3] <= 0)
    drop_boxes(
        table,
        report,
        outside,
        "box outside the image",
        [
            f"box {_fmt_box(x)} vs image {int(ww)}x{int(hh)}"
            for x, hh, ww in zip(b[outside][:20], h[outside][:20], w[outside][:20])
        ],
    )
    hw = table.image_hw[table.box_image]
    b = table.boxes
    clipped = np.empty_like(b)
    np.clip(b[:, 0], 0, hw[:, 1], out=clipped[:, 0])
    np.clip(b[:, 1], 0, hw[:, 0], out=clipped[:, 1])
    np.clip(b[:, 2], 0, hw[:, 1], out=clipped[:, 2])
    np.clip(b[:, 3], 0, hw[:, 0], out=clipped[:, 3])
    table.boxes = clipped
    thin = ((clipped[:, 2] - clipped[:, 0]) < min_box_size) | (
        (clipped[:, 3] - clipped[:, 1]) < min_box_size
    )
    report.clipped += int(((clipped != b).any(axis=1) & ~thin).sum())
    report.degenerate += int(thin.sum())
    table.select_boxes(~thin)


def _fmt_box(b) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


@contextmanager
def _no_gc():
    # Building a million small dicts triggers the cyclic GC over and over for nothing
    # (none of them form cycles): 5x slower with it on.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def table_to_dicts(table: BoxTable, image_root: str, *, apply_exif: bool) -> List[dict]:
    """
    Detectron2 dataset dicts, in ``image_ids`` order, boxes in XYXY_ABS, category 0.

    Each record also carries "apply_exif" for :func:`read_shelf_image`.
    """
    order = np.argsort(table.image_ids, kind="stable")
    with _no_gc():
        box_order = np.argsort(table.box_image, kind="stable")
        starts = np.searchsorted(table.box_image[box_order], np.arange(table.num_images + 1))
        mode = BoxMode.XYXY_ABS
        boxes = table.boxes[box_order].tolist()
        crowd = table.iscrowd[box_order].tolist() if table.iscrowd is not None else None
        if crowd is None:
            anns = [{"bbox": b, "bbox_mode": mode, "category_id": 0} for b in boxes]
        else:
            anns = [
                {"bbox": b, "bbox_mode": mode, "category_id": 0, "iscrowd": c}
                for b, c in zip(boxes, crowd)
            ]
        starts = starts.tolist()
        hw = table.image_hw.astype(np.int64).tolist()
        ids = table.image_ids.tolist()
        dicts = []
        for i in order.tolist():
            dicts.append(
                {
                    "file_name": os.path.join(image_root, table.image_names[i]),
                    "image_id": ids[i],
                    "height": hw[i][0],
                    "width": hw[i][1],
                    "apply_exif": apply_exif,
                    "annotations": anns[starts[i] : starts[i + 1]],
                }
            )
    return dicts
