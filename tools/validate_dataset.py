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
import logging
import sys

from gaussian_retina.shelves import RetailDatasetSpec, retail_dataset_spec
from gaussian_retina.shelves.validate import validate_retail_dataset


def _spec(args) -> RetailDatasetSpec:
    if args.dataset:
        spec = retail_dataset_spec(args.dataset)
        if spec is None:
            sys.exit(f"'{args.dataset}' is not a registered retail dataset")
        return spec
    if not (args.image_root and args.annotations):
        sys.exit("give --dataset, or both --image-root and --annotations")
    return RetailDatasetSpec("validate", args.image_root, args.annotations, args.format)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--dataset", help="a registered retail dataset name, e.g. sku110k_val")
    parser.add_argument("--image-root")
    parser.add_argument("--annotations", help="CSV, COCO json, or YOLO label folder")
    parser.add_argument("--format", default="auto",
                        choices=["auto", "sku110k", "benchmark", "coco", "yolo"])
    parser.add_argument("--decode", action="store_true",
                        help="decode every image (finds truncated / corrupt files; slow)")
    parser.add_argument("--list", type=int, default=30, metavar="N",
                        help="quote the first N problems (default 30)")
    parser.add_argument("--all", action="store_true", help="quote every problem")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    return validate_retail_dataset(_spec(args), decode=args.decode,
                                   limit=None if args.all else args.list)


if __name__ == "__main__":
    sys.exit(main())
