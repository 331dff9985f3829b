#!/usr/bin/env python3
"""
Evaluates one trained model on every registered test set and writes a table shaped like the
paper's Table 2: one row per dataset, columns AP, AP50, AP75, AR300, AR300@50 (Markdown and CSV).
Sets whose files are not on this machine are listed as missing, not silently dropped.

    python tools/benchmark_datasets.py --config-file configs/gln_R50.yaml \\
        --weights output/gln_R50/model_final.pth
    python tools/benchmark_datasets.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/synthetic/gln_R18/model_final.pth --datasets synthetic_shelves_val \\
        --max-images 20
"""

import argparse
import csv
import logging
import os
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.shelves import configure_shelf_datasets, register_retail_dataset
from gaussian_retina.evaluation import paper_metric_names
from gaussian_retina.evaluation.benchmark import evaluate_all

logger = logging.getLogger("gaussian_retina.benchmark")


def default_test_sets():
    """
    The registered shelf test sets, in registration order: SKU-110K's test split and the
    product-detection benchmark's sets (registered with ``register_retail_dataset``, which
    records an ``annotation_format``), whether or not their files are here.
    """
    return [name for name in DatasetCatalog.list()
            if name in MetadataCatalog
            and MetadataCatalog.get(name).get("annotation_format") is not None
            and (name.endswith("_test") or name.startswith("benchmark_"))]


def write_tables(rows, missing, output_dir, max_dets, note=""):
    """Writes benchmark.md and benchmark.csv under output_dir. Returns the Markdown text."""
    columns = paper_metric_names(max_dets)
    table = tabulate([[name] + [m[c] for c in columns] for name, m in rows.items()],
                     headers=["dataset"] + columns, tablefmt="pipe", floatfmt=".1f")
    text = [note, "", table if rows else "(no dataset could be evaluated)", ""]
    if missing:
        text += ["Missing (not evaluated):", ""]
        text += [f"- {name}: {why}" for name, why in missing.items()]
    text = "\n".join(text).strip() + "\n"
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "benchmark.md").write_text(text)
    with open(Path(output_dir) / "benchmark.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset"] + columns)
        for name, m in rows.items():
            writer.writerow([name] + [f"{m[c]:.2f}" for c in columns])
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--datasets", nargs="+", help="default: every registered test set")
    parser.add_argument("--register", nargs=3, action="append", default=[],
                        metavar=("NAME", "IMAGE_ROOT", "ANNOTATIONS"),
                        help="also evaluate this shelf dataset (any format "
                        "register_retail_dataset reads); repeatable")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images of each set")
    parser.add_argument("--output-dir", help="default: OUTPUT_DIR/benchmark")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()

    cfg = get_project_cfg(args.config_file, args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    setup_logger(name="detectron2")
    setup_logger(name="gaussian_retina")

    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "benchmark")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(args.weights)
    model.eval()

    for name, image_root, annotations in args.register:
        register_retail_dataset(name, image_root, annotations)
    names = (args.datasets or default_test_sets()) + [r[0] for r in args.register]
    logger.info(f"Evaluating {args.weights} on {len(names)} datasets: {', '.join(names)}")
    configure_shelf_datasets(cfg, names)  # the config's bad-input policy and COCO json cache
    rows, missing = evaluate_all(cfg, model, names, output_dir, args.max_images)
    note = (f"{args.config_file}, weights {args.weights}, {cfg.TEST.DETECTIONS_PER_IMAGE} "
            "detections per image"
            + (f", first {args.max_images} images of each set" if args.max_images else ""))
    text = write_tables(rows, missing, output_dir, cfg.TEST.DETECTIONS_PER_IMAGE, note)
    print(text)
    logger.info(f"Wrote {output_dir}/benchmark.md and benchmark.csv")


if __name__ == "__main__":
    main()
