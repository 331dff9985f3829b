#!/usr/bin/env python
"""
Time loading a SKU-110K-sized annotation CSV into Detectron2 dicts.

Generates (in a temporary folder, deleted afterwards) a CSV in the SKU-110K layout with the
train split's size: 8,233 images, about 147 boxes each (1.2 million rows), a few boxes past
the image border as in the real file, and one image file per name (symlinks to one JPEG of
the recorded size, so the image checks run for real). Then times ``DatasetCatalog.get`` on a
dataset registered with ``register_retail_dataset``: once without and once with the
per-image header check (``check_image_sizes``).

    python tools/benchmark_parsing.py [--images 8233] [--boxes-per-image 147] [--repeat 3]
"""

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from gaussian_retina.shelves import register_retail_dataset


def write_sku110k_like(folder, num_images, boxes_per_image, seed=0):
    """Write images/ and annotations.csv; returns (csv path, image root, rows)."""
    rng = np.random.default_rng(seed)
    image_root = os.path.join(folder, "images")
    os.makedirs(image_root)
    width, height = 2448, 3264  # the commonest SKU-110K size
    Image.new("RGB", (width, height), (90, 90, 90)).save(os.path.join(folder, "one.jpg"))
    lines = []
    for i in range(num_images):
        name = f"train_{i}.jpg"
        os.symlink(os.path.join(folder, "one.jpg"), os.path.join(image_root, name))
        k = int(rng.integers(boxes_per_image // 2, boxes_per_image * 3 // 2 + 1))
        x1 = rng.integers(-5, width - 60, k)
        y1 = rng.integers(-5, height - 60, k)
        x2 = x1 + rng.integers(40, 250, k)
        y2 = y1 + rng.integers(40, 400, k)
        lines.extend(f"{name},{a},{b},{c},{d},object,{width},{height}"
                     for a, b, c, d in zip(x1.tolist(), y1.tolist(), x2.tolist(), y2.tolist()))
    path = os.path.join(folder, "annotations_train.csv")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, image_root, len(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8233)
    parser.add_argument("--boxes-per-image", type=int, default=147)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    folder = tempfile.mkdtemp(prefix="sku110k_bench_")
    try:
        t = time.perf_counter()
        csv_path, image_root, rows = write_sku110k_like(folder, args.images, args.boxes_per_image)
        size_mb = os.path.getsize(csv_path) / 1e6
        print(f"generated {rows:,} rows, {args.images:,} images, {size_mb:.1f} MB "
              f"in {time.perf_counter() - t:.1f} s")
        for check in (False, True):
            name = f"bench_sku110k_check{int(check)}"
            register_retail_dataset(name, image_root, csv_path, "sku110k",
                                    check_image_sizes=check, coco_cache_dir=folder)
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                dicts = DatasetCatalog.get(name)
                times.append(time.perf_counter() - t)
                n_boxes = sum(len(d["annotations"]) for d in dicts)
                del dicts
            print(
                f"check_image_sizes={check}: {n_boxes:,} boxes in {args.images:,} dicts; "
                f"seconds per load: min {min(times):.2f}, median {statistics.median(times):.2f}, "
                f"max {max(times):.2f} (n={len(times)})"
            )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
