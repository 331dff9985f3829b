#!/usr/bin/env python3
"""
Fine-tuning learning curve on labelled shelf photos: two folds of the photos, a model fine-tuned
on 3, 6 or 12 photos of one fold (several seeds at the largest size) and scored on the other
fold, then the folds swapped; the model before fine-tuning is scored on the same folds. Each
fine-tune is the README's command: ``train_net.py`` with the photos given as
``DATASETS.REGISTER``, run as its own process.

    python tools/finetune_learning_curve.py --config-file configs/finetune/gln_R18_photos.yaml \\
        --weights output/synthetic/gln_R18/model_final.pth --table results/finetune_table.md

The folds: the photos' names start with their camera (``C1_`` .. ``C4_``); within each camera the
photos sorted by name alternate between fold A (positions 0, 2, 4) and fold B (1, 3, 5). The
first n photos of a fold, cameras taken in turn, are its n-photo training set. ``--quarters``
instead holds out each half of a fold in turn and fine-tunes on the other 18 photos: the nearest
the 24 photos come to scoring a model trained on all of them on photos it has not seen.

Columns: AP, AP50, AP75, AR300 (DenseCOCOEvaluator, percent) on the other fold; the count error
is the mean absolute error of the detection count over the mean true count, with the score
threshold calibrated on the training photos (the predict command's reference set).

``--peer yolo`` fine-tunes Ultralytics YOLOv8n instead, from ``--weights`` (its own
synthetic-trained ``.pt``), for ``--minutes`` of wall time on ``--threads`` torch threads; run it
with the peers' virtualenv's python (see tools/benchmark_yolo_peer.py).
"""

import argparse
import csv
import json
import logging
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("gaussian_retina.learning_curve")


# ---------------------------------------------------------------------------------- folds
def read_rows(annotations):
    """The SKU-110K rows of ``annotations``, grouped by image name (file order kept)."""
    rows = defaultdict(list)
    with open(annotations, newline="") as f:
        for row in csv.reader(f):
            if row:
                rows[row[0]].append(row)
    return rows


def camera_folds(names):
    """{"A": [...], "B": [...]}: each camera's photos, sorted, alternate between the folds; a
    fold lists its photos with the cameras taken in turn, so its first n photos spread over
    the cameras."""
    by_camera = defaultdict(list)
    for name in sorted(names):
        by_camera[name.split("_")[0]].append(name)
    folds = {}
    for fold, start in (("A", 0), ("B", 1)):
        columns = [photos[start::2] for _, photos in sorted(by_camera.items())]
        folds[fold] = [c[rank] for rank in range(max(map(len, columns))) for c in columns if rank < len(c)]
    return folds


def write_subset(rows, names, path):
    """A SKU-110K CSV holding the rows of ``names`` only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for name in names:
            writer.writerows(rows[name])
    return path


# ---------------------------------------------------------------------------------- scoring
def score_and_count(cfg, model_fn, train_name, test_name):
    """
    AP columns of ``model_fn`` on ``test_name``, and its count error there with the detection
    threshold calibrated on ``train_name``.

    Args:
        model_fn: a Detectron2-style model (batched inputs -> [{"instances"}]) in eval mode.
    """
    import torch
    from detectron2.data import DatasetCatalog

    from gaussian_retina.engine import Trainer
    from gaussian_retina.evaluation import DenseCOCOEvaluator, paper_metrics
    from gaussian_retina.inference.counting import calibrate_threshold, count_detections

    def predict(name, evaluator=None):
        scores = []
        with torch.no_grad():
            for batch in Trainer.build_test_loader(cfg, name):
                outputs = model_fn(batch)
                if evaluator is not None:
                    evaluator.process(batch, outputs)
                scores.extend(o["instances"].scores.cpu().numpy() for o in outputs)
        return scores

    true_train = [len(r["annotations"]) for r in DatasetCatalog.get(train_name)]
    true_test = [len(r["annotations"]) for r in DatasetCatalog.get(test_name)]
    threshold, _ = calibrate_threshold(predict(train_name), true_train, count_detections)
    evaluator = DenseCOCOEvaluator(
        test_name, distributed=False, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE
    )
    evaluator.reset()
    test_scores = predict(test_name, evaluator)
    metrics = paper_metrics(evaluator.evaluate().get("bbox", {}), cfg.TEST.DETECTIONS_PER_IMAGE)
    pred = np.array([count_detections(s, threshold) for s in test_scores], dtype=float)
    true = np.array(true_test, dtype=float)
    metrics["count_error"] = 100.0 * float(np.abs(pred - true).mean() / true.mean())
    metrics["count_threshold"] = threshold
    return metrics


def detectron2_scorer(config_file, opts, weights):
    from detectron2.checkpoint import DetectionCheckpointer

    from gaussian_retina.engine import Trainer, get_project_cfg

    cfg = get_project_cfg(config_file, list(opts) + ["MODEL.WEIGHTS", str(weights)])
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(str(weights))
    model.eval()
    return cfg, model


# ---------------------------------------------------------------------------------- runs
def register_opts(datasets):
    """DATASETS.REGISTER's value for (name, image folder, annotations) triples."""
    return repr(tuple(tuple(str(v) for v in d) for d in datasets))


def train_ours(args, run_dir, train, test, seed):
    """Runs the README's fine-tuning command; returns its training minutes (Detectron2's log)."""
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train_net.py"),
        "--config-file",
        args.config_file,
        "DATASETS.REGISTER",
        register_opts([train, test]),
        "DATASETS.TRAIN",
        repr((train[0],)),
        "DATASETS.TEST",
        repr((test[0],)),
        "MODEL.WEIGHTS",
        args.weights,
        "SEED",
        str(seed),
        "OUTPUT_DIR",
        str(run_dir),
        *args.opts,
    ]
    if not (run_dir / "model_final.pth").is_file():
        with open(run_dir.with_suffix(".log"), "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    found = re.findall(
        r"Total training time: (\d+):(\d+):(\d+)", (run_dir / "log.txt").read_text()
    )
    h, m, s = map(int, found[-1])
    return (h * 3600 + m * 60 + s) / 60.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-file", default="configs/finetune/gln_R18_photos.yaml")
    ap.add_argument("--weights", required=True, help="the model before fine-tuning")
    ap.add_argument("--photos", default="../shared/data/tobacco_shelves")
    ap.add_argument("--output-dir", default="output/finetune_learning_curve")
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 12])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at the largest size")
    ap.add_argument("--folds", nargs="+", default=["A", "B"], help="training folds")
    ap.add_argument("--tune", action="store_true", help="inside fold A only: train on its first "
                    "6 photos, score on its other 6 (for choosing settings)")
    ap.add_argument("--tune-reverse", action="store_true", help="with --tune: train on fold A's "
                    "last 6 photos and score on its first 6")
    ap.add_argument("--tune-photos", type=int, default=6, choices=range(1, 7), metavar="N",
                    help="with --tune: train on N of the six photos (default 6)")
    ap.add_argument("--quarters", action="store_true", help="instead of the curve: each quarter "
                    "of the photos (A[:6], A[6:], B[:6], B[6:]) scored by a model fine-tuned on "
                    "the other 18, first seed only; --folds picks the folds whose halves are held out")
    ap.add_argument("--peer", choices=["ours", "yolo"], default="ours")
    ap.add_argument("--minutes", type=float, help="--peer yolo: wall-time budget per fine-tune")
    ap.add_argument("--threads", type=int, default=2, help="--peer yolo: torch threads")
    ap.add_argument("--imgsz", type=int, default=256, help="--peer yolo: train and test size")
    ap.add_argument("--nms-iou", type=float, default=0.7, help="--peer yolo: NMS IoU at test")
    ap.add_argument("--table", help="also write the Markdown table here")
    ap.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    args = ap.parse_args()

    from detectron2.utils.logger import setup_logger

    setup_logger(name="gaussian_retina")
    out = Path(args.output_dir).resolve()
    photos = Path(args.photos).resolve()
    rows = read_rows(photos / "annotations.csv")
    folds = camera_folds(rows)
    images = str(photos / "images")

    def dataset(tag, names):
        return (f"lc_{tag}", images, str(write_subset(rows, names, out / "folds" / f"{tag}.csv")))

    plan = []  # (row label, train dataset, test dataset, seed)
    if args.tune:
        a, n = folds["A"], args.tune_photos
        first, rest = dataset("A6", a[:6]), dataset("A6rest", a[6:])
        if args.tune_reverse:
            train = rest if n == 6 else dataset(f"A{n}rest", a[6 : 6 + n])
            label = "A[6:] -> A[:6]" if n == 6 else f"A[6:{6 + n}] -> A[:6]"
            plan.append((label, train, first, args.seeds[0]))
        else:
            train = first if n == 6 else dataset(f"A{n}", a[:n])
            plan.append((f"A[:{n}] -> A[6:]", train, rest, args.seeds[0]))
    elif args.quarters:
        quarters = {
            f"{fold}[{part}]": folds[fold][:6] if part == ":6" else folds[fold][6:]
            for fold in ("A", "B")
            for part in (":6", "6:")
        }
        for i, (held, names) in enumerate(quarters.items()):
            if held[0] not in args.folds:
                continue
            rest = [n for q in quarters.values() if q is not names for n in q]
            plan.append((f"18 -> {held}", dataset(f"Q{i}train", rest), dataset(f"Q{i}", names), args.seeds[0]))
    else:
        for fold in args.folds:
            other = "B" if fold == "A" else "A"
            test = dataset(f"{other}all", folds[other])
            for n in args.sizes:
                seeds = args.seeds if n == max(args.sizes) else args.seeds[:1]
                for seed in seeds:
                    plan.append((f"{fold}{n} -> {other}", dataset(f"{fold}{n}", folds[fold][:n]), test, seed))

    from gaussian_retina.engine import get_project_cfg
    from gaussian_retina.shelves import configure_shelf_datasets

    results = []
    for label, train, test, seed in plan:
        cfg = get_project_cfg(args.config_file, ["DATASETS.REGISTER", register_opts([train, test])] + args.opts)
        configure_shelf_datasets(cfg, [train[0], test[0]])
        tag = f"{args.peer}_{train[0]}_s{seed}"
        before = None
        if args.peer == "ours":
            if seed == args.seeds[0]:
                bcfg, model = detectron2_scorer(args.config_file, args.opts + ["DATASETS.REGISTER", register_opts([train, test])], args.weights)
                before = score_and_count(bcfg, model, train[0], test[0])
            run_dir = out / tag
            t0 = time.time()
            minutes = train_ours(args, run_dir, train, test, seed)
            wall = (time.time() - t0) / 60
            acfg, model = detectron2_scorer(args.config_file, args.opts + ["DATASETS.REGISTER", register_opts([train, test])], run_dir / "model_final.pth")
            after = score_and_count(acfg, model, train[0], test[0])
        else:
            from yolo_finetune import finetune_yolo, yolo_scorer

            if seed == args.seeds[0]:
                before = score_and_count(*yolo_scorer(args, cfg, args.weights), train[0], test[0])
            run_dir = out / tag
            weights, minutes = finetune_yolo(args, run_dir, train[0], seed)
            wall = minutes
            ycfg, model = yolo_scorer(args, cfg, weights)
            after = score_and_count(ycfg, model, train[0], test[0])
        results.append(dict(label=label, seed=seed, before=before, after=after, minutes=minutes, wall=wall))
        logger.info(json.dumps(results[-1], default=float))
        (out / f"results_{args.peer}.json").write_text(json.dumps(results, indent=1, default=float))

    lines = markdown_table(results, args.peer)
    print("\n".join(lines))
    if args.table:
        Path(args.table).write_text("\n".join(lines) + "\n")


def markdown_table(results, peer):
    cols = ["AP", "AP50", "AP75", "AR300", "count_error"]
    lines = [
        f"| {peer}: train -> test | seed | train min | " + " | ".join(cols) + " | before: " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---:|" * (2 * len(cols)),
    ]
    for r in results:
        a, b = r["after"], r["before"] or {}
        cells = [r["label"], str(r["seed"]), f"{r['minutes']:.2f}"]
        cells += [f"{a[c]:.1f}" for c in cols]
        cells += [f"{b[c]:.1f}" if c in b else "" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
