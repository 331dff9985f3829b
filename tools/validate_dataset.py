#!/usr/bin/env python
"""
Check a shelf dataset folder and report every defect, with counts.

    # a predefined split (under $DETECTRON2_DATASETS, default ./datasets)
    python tools/validate_dataset.py --dataset sku110k_val --decode
    # any folder, in any supported format (sku110k / benchmark CSV, COCO json, YOLO labels)
    python tools/validate_dataset.py --image-root path/images --annotations path/ann.csv

It loads the annotations as training would, under the "skip" policy so that every problem
is found rather than the first: malformed rows (wrong column count, non-numeric field,
x2 <= x1), images named but missing, unreadable image headers, recorded sizes that disagree
with the file, boxes outside the image; it counts boxes clipped to the image and degenerate
boxes, and images whose EXIF orientation tag is ignored or applied. With --decode it also
decodes every image as the data loader would, finding truncated and corrupt files.
Exit status: 0 clean, 1 defects found, 2 the dataset cannot be read at all.
"""

import argparse
import collections
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from gaussian_retina.data.datasets import AnnotationError  # noqa: E402
from gaussian_retina.data.datasets.box_table import table_to_dicts  # noqa: E402
from gaussian_retina.data.datasets.register import (  # noqa: E402
    _SPECS,
    RetailDatasetSpec,
    load_retail_table,
)
from gaussian_retina.data.image_reader import (  # noqa: E402
    BadImageError,
    exif_orientation,
    read_shelf_image,
)


def _spec(args) -> RetailDatasetSpec:
    if args.dataset:
        if args.dataset not in _SPECS:
            sys.exit(
                f"'{args.dataset}' is not a registered retail dataset; known: "
                f"{', '.join(sorted(n for n in _SPECS if not n.startswith('test')))}"
            )
        return _SPECS[args.dataset]
    if not (args.image_root and args.annotations):
        sys.exit("give --dataset, or both --image-root and --annotations")
    return RetailDatasetSpec(
        "validate", args.image_root, args.annotations, args.format, None, True, 1.0, None
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--dataset", help="a registered retail dataset name, e.g. sku110k_val")
    parser.add_argument("--image-root")
    parser.add_argument("--annotations", help="CSV, COCO json, or YOLO label folder")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "sku110k", "benchmark", "coco", "yolo"]
    )
    parser.add_argument(
        "--decode",
        action="store_true",
        help="decode every image (finds truncated / corrupt files; slow)",
    )
    parser.add_argument(
        "--list", type=int, default=30, metavar="N", help="quote the first N problems (default 30)"
    )
    parser.add_argument("--all", action="store_true", help="quote every problem")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    spec = _spec(args)
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

    dicts = table_to_dicts(table, spec.image_root, apply_exif=apply_exif)
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
        if args.decode:
            try:
                read_shelf_image(d, "BGR")
            except BadImageError as e:
                bad_images.append(str(e))
        if args.decode and (i + 1) % 500 == 0:
            print(f"  decoded {i + 1}/{len(dicts)} images", file=sys.stderr)
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

    limit = None if args.all else args.list
    quoted = report.quoted(limit=10**9 if limit is None else limit)
    if quoted:
        print(f"\nproblems ({'all' if limit is None else f'first {len(quoted)}'}):")
        for q in quoted:
            print("  " + q)
    if bad_images:
        print("\nimages that fail to decode:")
        for msg in bad_images if limit is None else bad_images[:limit]:
            print("  " + msg)
    print("\ndefects:" if defects else "\nno defects found")
    for k, n in sorted(defects.items()):
        print(f"  {n:>9,}  {k}")
    if not args.decode:
        print("(images not decoded; --decode finds truncated and corrupt files)")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
