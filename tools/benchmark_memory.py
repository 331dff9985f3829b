#!/usr/bin/env python3
"""
Peak memory of anchor matching and of one training step with dense ground truth, on the CPU.

Every case runs in a fresh process: the models are built without weights, the inputs are
synthesised to SKU-110K's statistics (rows of touching products), and the peak resident memory
of the step alone is read from the kernel. Matching by Detectron2's full IoU matrix
("detectron2") and by chunks of anchors ("chunked", the add-on's default) are compared.

    python tools/benchmark_memory.py --output memory_benchmark.md
    python tools/benchmark_memory.py --skip-steps --boxes 300 1000 --matching chunked
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from tabulate import tabulate

from benchmark_harness import (
    device_description,
    label_anchors_step,
    measure_peak_memory,
    training_step,
    append_report,
)

ROOT = Path(__file__).resolve().parents[1]


def _row(batch, boxes, matching, r):
    if "error" in r:
        return [batch, boxes, matching, r["error"], "", "", ""]
    if "anchors" in r:
        extra = f"{r['positive_anchors']} positive of {r['anchors']} anchors"
    else:
        extra = f"total loss {r['losses']['total_loss']:.3f}"
    return [batch, boxes, matching, r["rss_before_mb"], r["peak_rss_mb"],
            r["peak_rss_mb"] - r["rss_before_mb"], r["seconds"], extra]


def run_cases(step, args, batches, title):
    rows = []
    for batch in batches:
        for boxes in args.boxes:
            for matching in args.matching:
                r = measure_peak_memory(step, args.config_file, tuple(args.size), boxes, batch,
                                        matching, tuple(args.opts), threads=args.threads)
                rows.append(_row(batch, boxes, matching, r))
                print(rows[-1], flush=True)
    headers = ["batch", "boxes / image", "matching", "RSS before (MB)", "peak RSS (MB)",
               "peak - before (MB)", "wall (s)", ""]
    table = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".1f")
    return [f"### {title}", "", table, ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="gln_R50.yaml", help="under configs/, or a path")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    parser.add_argument("--boxes", type=int, nargs="+", default=[150, 300, 1000])
    parser.add_argument("--matching", nargs="+", default=["detectron2", "chunked"],
                        choices=["detectron2", "chunked"])
    parser.add_argument("--anchor-batch", type=int, nargs="+", default=[1],
                        help="images per label_anchors call")
    parser.add_argument("--step-batch", type=int, nargs="+", default=[1, 2],
                        help="images per training step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--mmap-threshold", type=int,
        help="glibc's MALLOC_MMAP_THRESHOLD_ for the measured processes (bytes): a fixed threshold "
        "returns freed blocks to the system at once, so the peak is that of the live tensors; by "
        "default glibc keeps some freed memory in its heap, as in a training run",
    )
    parser.add_argument("--skip-anchors", action="store_true")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--output", help="also append the report (Markdown) to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()

    if args.mmap_threshold:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)  # read at process start
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    lines = [
        f"## {args.config_file}, {args.size[0]}x{args.size[1]}",
        "",
        f"`{command}`",
        "",
        f"torch {torch.__version__}, {device_description('cpu')}; {args.threads} thread(s) per "
        "case, one case at a time, each in a fresh process; glibc's "
        + (f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}." if args.mmap_threshold
           else "defaults."),
        "",
    ]
    print("\n".join(lines), flush=True)
    if not args.skip_anchors:
        lines += run_cases(label_anchors_step, args, args.anchor_batch, "label_anchors alone")
    if not args.skip_steps:
        title = "One training step (SimpleTrainer.run_step)"
        lines += run_cases(training_step, args, args.step_batch, title)
    print("\n".join(lines))
    append_report(args.output, lines)


if __name__ == "__main__":
    main()
