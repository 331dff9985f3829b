"""
Check a shelf dataset and report every defect, with counts (``tools/validate_dataset.py`` is
its command line). It loads the annotations as training would, under the "skip" policy so that
every problem is found rather than the first.
"""

import collections
import sys
from typing import List, Optional, Tuple

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou
from PIL import Image

from ..data.image_reader import BadImageError, exif_orientation, read_shelf_image
from .bad_input import AnnotationError
from .box_table import table_to_dicts
from .register import RetailDatasetSpec, load_retail_table

__all__ = ["validate_retail_dataset", "boxes_labelled_twice", "labelled_twice", "TWICE_IOU"]

# Two boxes of one image overlapping this much frame the same product: neighbours on a shelf,
# even packs stacked in perspective, overlap far less. Such a pair inflates the image's true
# count and leaves one unmatchable ground-truth box in evaluation.
TWICE_IOU = 0.75


def labelled_twice(boxes, iou_thresh: float = TWICE_IOU) -> List[Tuple[int, int, float]]:
    """Pairs (i, j, IoU), i < j, of one image's (N, 4) XYXY ``boxes`` overlapping that much."""
    if len(boxes) < 2:
        return []
    b = Boxes(torch.as_tensor(np.asarray(boxes), dtype=torch.float64))
    iou = pairwise_iou(b, b).triu(diagonal=1)
    return [(a, c, float(iou[a, c])) for a, c in (iou >= iou_thresh).nonzero().tolist()]


def boxes_labelled_twice(table, iou_thresh: float = TWICE_IOU) -> List[Tuple[int, int, float]]:
    """
    Pairs (i, j, IoU) of box indices of ``table`` (i < j, the same image) whose IoU is at least
    ``iou_thresh``, in the order of the file.
    """
    order = np.argsort(table.box_image, kind="stable")
    starts = np.flatnonzero(np.diff(table.box_image[order], prepend=-1))
    pairs = []
    for idx in np.split(order, starts[1:]):
        for a, b, iou in labelled_twice(table.boxes[idx], iou_thresh):
            pairs.append((int(idx[a]), int(idx[b]), iou))
    return sorted(pairs)


def _look_at_images(dicts, decode: bool):
    """
    The images' EXIF orientation tags other than 1, counted by tag, and with ``decode`` the
    messages of the images that fail to decode as the data loader reads them.
    """
    oriented = collections.Counter()
    bad_images = []
    for i, d in enumerate(dicts):
        try:
            with Image.open(d["file_name"]) as im:
                o = exif_orientation(im)
            if o != 1:
                oriented[o] += 1
        except OSError:
            pass  # reported by the header check / --decode
        if decode:
            try:
                read_shelf_image(d, "BGR")
            except BadImageError as e:
                bad_images.append(str(e))
        if decode and (i + 1) % 500 == 0:
            print(f"  decoded {i + 1}/{len(dicts)} images", file=sys.stderr)
    return oriented, bad_images


def _print_labelled_twice(table, twice, limit: Optional[int]) -> None:
    quoted = "all" if limit is None else f"first {min(limit, len(twice))}"
    print(f"\nboxes labelled twice ({quoted}):")
    for i, j, iou in twice if limit is None else twice[:limit]:
        name = table.image_names[table.box_image[i]]
        print(f"  {table.box_files(np.array([i]))[0]}, {table.unit}s {table.box_loc[i]} and "
              f"{table.box_loc[j]}: the same product in {name} (IoU {iou:.2f})")


def validate_retail_dataset(
    spec: RetailDatasetSpec, *, decode: bool = False, limit: Optional[int] = 30
) -> int:
    """
    Print what is wrong with a dataset: malformed rows (wrong column count, non-numeric field,
    x2 <= x1), images named but missing, unreadable image headers, recorded sizes that disagree
    with the file, boxes outside the image; boxes clipped to the image and degenerate boxes;
    images whose EXIF orientation tag is ignored or applied; JPEG and PNG files cut short; pairs
    of boxes that frame one product twice (``boxes_labelled_twice``). With
    ``decode`` it also decodes every image as the data loader would, finding corrupt files.

    Args:
        limit: quote the first ``limit`` problems; None quotes every one.
    Returns:
        0 clean, 1 defects found, 2 the dataset cannot be read at all.
    """
    try:
        table, report, apply_exif = load_retail_table(spec, policy="skip")
    except (AnnotationError, FileNotFoundError) as e:
        print(f"CANNOT READ: {e}")
        return 2
    fmt, _ = spec.resolved()
    print(f"dataset: {spec.name}  format: {fmt}  annotations: {spec.annotations}")
    print(
        f"images:  {spec.image_root}  (boxes fit {'EXIF-oriented' if apply_exif else 'stored'}"
        " pixels)"
    )
    print(report.summary())

    defects = collections.Counter()
    for reason, rows in report.rows_dropped.items():
        defects[f"rows dropped: {reason}"] += rows
    for reason, n in report.images_dropped.items():
        defects[f"images dropped: {reason}"] += n
    if report.clipped:
        defects["boxes partly outside the image (clipped)"] += report.clipped
    if report.degenerate:
        defects["degenerate boxes after clipping (dropped)"] += report.degenerate

    twice = boxes_labelled_twice(table)
    if twice:
        defects[f"boxes labelled twice (IoU >= {TWICE_IOU} with another box of their image)"] += len(twice)

    dicts = table_to_dicts(table, spec.image_root, apply_exif=apply_exif)
    oriented, bad_images = _look_at_images(dicts, decode)
    if oriented:
        n = sum(oriented.values())
        how = (
            "APPLIED (boxes must fit the rotated view)"
            if apply_exif
            else ("IGNORED (boxes fit the stored pixels)")
        )
        print(
            f"EXIF orientation tags: {n} images (tags {dict(sorted(oriented.items()))}), "
            f"{how}; pass apply_exif= to register_retail_dataset if that is wrong"
        )
    for msg in bad_images:
        kind = msg.split(": ", 1)[1].split(" (")[0].split(":")[0]
        defects[f"images failing to decode: {kind}"] += 1

    quoted = report.quoted(limit=10**9 if limit is None else limit)
    if quoted:
        print(f"\nproblems ({'all' if limit is None else f'first {len(quoted)}'}):")
        for q in quoted:
            print("  " + q)
    if twice:
        _print_labelled_twice(table, twice, limit)
    if bad_images:
        print("\nimages that fail to decode:")
        for msg in bad_images if limit is None else bad_images[:limit]:
            print("  " + msg)
    print("\ndefects:" if defects else "\nno defects found")
    for k, n in sorted(defects.items()):
        print(f"  {n:>9,}  {k}")
    if not decode:
        print("(images not decoded: cut-short files are found by their missing end marker; "
              "--decode also finds files corrupt inside)")
    return 1 if defects else 0

