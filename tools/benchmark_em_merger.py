#!/usr/bin/env python
"""
Time gaussian_retina.baselines.em_merger.em_merge on one CPU thread, per image, for a given
number of candidate boxes (default 1,000), on two layouts at test-time scale (short side 800):

- "real": the densest image of the generic product-detection benchmark's ground truth
  (../shared/data/benchmark_annotations/*.csv), skipped with a message where that is absent;
- "grid": an SKU-110K-like shelf of 150 touching products, 10 rows x 15 columns.

Candidates are the ground-truth boxes jittered by 6% of their size per coordinate, spread evenly
over the objects, with scores uniform in [0.05, 1], like a RetinaNet's before NMS.

    python tools/benchmark_em_merger.py [--num-boxes 1000] [--repeats 30] [--seed 0]

Prints a Markdown table: median and 90th-percentile milliseconds per image, objects, and boxes
kept (which should be close to the number of objects).
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmark_harness import cpu_name
from gaussian_retina.baselines.em_merger import em_merge
from gaussian_retina.shelves.retail_csv import read_box_csv

SHORT_SIDE = 800
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark_annotations"


def densest_real_layout(data_dir: Path):
    """(N, 4) boxes of the image with the most boxes among ``data_dir/*.csv``, and its name."""
    best = (0, None, None)
    for path in sorted(data_dir.glob("*.csv")):
        table = read_box_csv(str(path))
        counts = np.bincount(table.box_image, minlength=len(table.image_names))
        densest = int(counts.argmax())
        if counts[densest] > best[0]:
            boxes = table.boxes[table.box_image == densest]
            best = (counts[densest], f"{path.name}:{table.image_names[densest]}", boxes)
    return best[2], best[1]


def grid_layout():
    """150 touching products of 86 x 78 px on an 800 x 1333 image."""
    xs, ys = np.meshgrid(20 + np.arange(15) * 86.0, 10 + np.arange(10) * 78.0)
    xs, ys = xs.ravel(), ys.ravel()
    return np.stack([xs, ys, xs + 86, ys + 78], axis=1)


def to_test_scale(boxes):
    """Shift to the origin and scale so the layout's shorter side is SHORT_SIDE; (H, W) too."""
    boxes = boxes - np.tile(boxes[:, :2].min(axis=0), 2)
    w, h = boxes[:, 2].max(), boxes[:, 3].max()
    s = SHORT_SIDE / min(w, h)
    return boxes * s, (int(np.ceil(h * s)), int(np.ceil(w * s)))


def candidates(objects, num_boxes, rng):
    owner = np.arange(num_boxes) % len(objects)
    size = np.tile(objects[owner, 2:] - objects[owner, :2], 2)  # (w, h, w, h)
    boxes = objects[owner] + rng.normal(0, 0.06, (num_boxes, 4)) * size
    scores = rng.uniform(0.05, 1.0, num_boxes)
    return boxes, scores


def time_layout(objects, image_size, num_boxes, repeats, rng):
    boxes, scores = candidates(objects, num_boxes, rng)
    em_merge(boxes, scores, image_size=image_size)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        keep = em_merge(boxes, scores, image_size=image_size)
        times.append((time.perf_counter() - t0) * 1000)
    return np.median(times), np.percentile(times, 90), len(keep)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-boxes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    layouts = [("grid (SKU-110K-like)", grid_layout(), (800, 1333))]
    if DATA.is_dir():
        boxes, name = densest_real_layout(DATA)
        boxes, size = to_test_scale(boxes)
        layouts.insert(0, (f"real ({name})", boxes, size))
    else:
        print(f"{DATA} is absent: timing the synthetic grid only.")

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, 1 torch thread; "
          f"{args.num_boxes} candidates per image, {args.repeats} repeats.\n")
    print("| layout | image (H x W) | objects | median ms | p90 ms | boxes kept |")
    print("|---|---|---|---|---|---|")
    for label, objects, size in layouts:
        med, p90, kept = time_layout(objects, size, args.num_boxes, args.repeats, rng)
        print(f"| {label} | {size[0]} x {size[1]} | {len(objects)} | {med:.1f} | {p90:.1f} "
              f"| {kept} |")


if __name__ == "__main__":
    main()
