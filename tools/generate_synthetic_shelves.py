#!/usr/bin/env python3
"""
Pre-generate the synthetic shelf splits (the datasets do this themselves on first use):

    python tools/generate_synthetic_shelves.py --root datasets
    python tools/generate_synthetic_shelves.py --splits val \
        --example results/figures/synthetic_example.png
    python tools/generate_synthetic_shelves.py --splits val --picture-prob 0.5 --example-index 5 \
        --example results/figures/synthetic_pictures_example.png
"""
import argparse
import json
import logging
import os

import cv2

from gaussian_retina.shelves.synthetic_scene import ShelfSceneParams
from gaussian_retina.shelves.synthetic_shelves import generate_synthetic_shelves


def draw_example(json_file, out_file, index=0):
    """Draw the boxes of one image, alternating colours so touching neighbours stay apart."""
    with open(json_file) as f:
        coco = json.load(f)
    info = coco["images"][index]
    image = cv2.imread(os.path.join(os.path.dirname(json_file), "images", info["file_name"]))
    colors = [(0, 255, 0), (255, 0, 255), (0, 200, 255)]
    anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
    for i, ann in enumerate(anns):
        x, y, w, h = ann["bbox"]
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), colors[i % len(colors)], 1)
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    cv2.imwrite(out_file, image)
    return len(anns)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pre-generate the synthetic shelf dataset.")
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--num-images", type=int, default=None,
                        help="images per split (default: 300 train, 50 val)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture-prob", type=float, default=0.0,
                        help="ShelfSceneParams.picture_prob (0.5: the _pictures twins)")
    parser.add_argument("--stock-depth-prob", type=float, default=0.0,
                        help="ShelfSceneParams.stock_depth_prob (0.5: the _deep twins)")
    parser.add_argument("--example", default=None,
                        help="also draw an image of the last split with its boxes to this file")
    parser.add_argument("--example-index", type=int, default=0,
                        help="index of the image drawn by --example")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = ShelfSceneParams(picture_prob=args.picture_prob,
                              stock_depth_prob=args.stock_depth_prob)
    for split in args.splits:
        json_file = generate_synthetic_shelves(
            os.path.expanduser(args.root), split, num_images=args.num_images, seed=args.seed,
            params=params,
        )
        print(json_file)
    if args.example:
        num = draw_example(json_file, args.example, args.example_index)
        print(f"Wrote {args.example} ({num} boxes)")


if __name__ == "__main__":
    main()
