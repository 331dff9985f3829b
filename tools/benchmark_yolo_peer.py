#!/usr/bin/env python3
"""
Peer benchmark: Ultralytics YOLOv8n trained from scratch on our config's training sets for a
wall-time budget, scored with this project's evaluator (DenseCOCOEvaluator, 300 detections per
image) on ``synthetic_shelves_val`` and on the 24 real TobaccoShelves photos, beside our model.

Ultralytics is AGPL-3.0 and no dependency of gaussian_retina: run this script with the python of
a separate virtualenv that sees the machine's torch, torchvision and detectron2:

    python3 -m venv --system-site-packages ~/venv-peers && ~/venv-peers/bin/pip install ultralytics
    ~/venv-peers/bin/python tools/benchmark_yolo_peer.py --minutes 7.0 --seed 0 \\
        --ours configs/synthetic/gln_R18.yaml output/synthetic/gln_R18/model_final.pth

1. The training sets of ``--ours``'s config (else ``--test-config``'s) are exported as YOLO
   folders under ``--output-dir`` (images symlinked, ``0 cx cy w h`` rows), with a 4-image val:
   Ultralytics validates once after training even with ``val=False``.
2. ``YOLO("yolov8n.yaml")`` trains from scratch on the CPU with ``time=--minutes/60`` (it stops
   after the step that crosses the budget and fits its schedule to it), imgsz 256, batch 8,
   seeded and deterministic; ``--epochs N`` trains N epochs instead. The loop's wall time is
   measured.
3. YOLO, wrapped as a Detectron2 model, is scored by ``evaluate_all`` on images from our test
   mapper, predicting at imgsz 256 (Ultralytics's val defaults: conf 0.001, NMS IoU 0.7, 300
   detections), boxes scaled back; one more row scores the tobacco photos at long side
   ``--large-size`` (0: skip).
4. ``--ours CONFIG WEIGHTS`` scores our model on the same sets; one Markdown table is printed and
   written to ``--table``.

Offline: ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``, a private ``YOLO_CONFIG_DIR`` whose
``Arial.ttf`` is matplotlib's DejaVuSans.ttf, ``amp=False`` (its check downloads weights), and
internet sockets refused and counted (``--allow-network`` lifts it). Smoke run (under a minute):

    ~/venv-peers/bin/python tools/benchmark_yolo_peer.py --minutes 0.5 --max-images 4 \\
        --output-dir output/yolo_peer_smoke --table output/yolo_peer_smoke/table.md
"""

import argparse
import importlib.util
import json
import logging
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = (
    "benchmark_yolo_peer.py needs ultralytics (AGPL, kept out of gaussian_retina): "
    "python3 -m venv --system-site-packages ~/venv-peers && "
    "~/venv-peers/bin/pip install ultralytics, then run this script with ~/venv-peers/bin/python"
)
VAL_SET, REAL_SET = "synthetic_shelves_val", "tobacco_shelves_24"
SUMMARY_FILE = "train_summary.json"
BLOCKED_NETWORK = []

logger = logging.getLogger("gaussian_retina.yolo_peer")


def block_internet():
    """
    Refuses every internet (AF_INET/AF_INET6) connection and name lookup in this process (and its
    forked workers), logging each attempt. Unix sockets (multiprocessing) are untouched.
    """
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what):
        BLOCKED_NETWORK.append(what)
        logger.warning(f"blocked a network access ({what}); this benchmark runs offline")
        raise OSError(f"network access blocked by benchmark_yolo_peer.py: {what}")

    def guarded(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                refuse(f"connect {address}")
            return real(self, address)

        return connect

    socket.socket.connect = guarded(real_connect)
    socket.socket.connect_ex = guarded(real_connect_ex)
    socket.getaddrinfo = lambda host, *args, **kwargs: refuse(f"resolve {host}")
    socket.gethostbyname = lambda host: refuse(f"resolve {host}")


def import_ultralytics(config_dir):
    """
    Imports ultralytics configured for an offline run with its settings and fonts in
    ``config_dir``; exits with a one-line message when it is not installed.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        sys.exit(INSTALL_HINT)
    import matplotlib
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    # Ultralytics draws with Arial and downloads it when absent (check_det_dataset asks for it
    # even with plots=False): give it matplotlib's own DejaVu Sans under that name.
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        font = Path(USER_CONFIG_DIR) / name
        if not font.exists():
            font.parent.mkdir(parents=True, exist_ok=True)
            font.symlink_to(dejavu)
    # sync=False: no usage events; no logger integrations either.
    SETTINGS.update(sync=False, clearml=False, comet=False, dvc=False, mlflow=False,
                    raytune=False, tensorboard=False, wandb=False)
    return ultralytics


def export_yolo_dataset(root, train_sets, num_val_images):
    """
    The YOLO copy of the training sets (one folder each under ``train/``: their file names can
    repeat, and a set may be called "val") and of a tiny val. Returns the data yaml's path.
    """
    from detectron2.data import DatasetCatalog

    from gaussian_retina.shelves.coco_yolo import write_yolo_split

    root = Path(root).resolve()
    for name in train_sets:
        n, b = write_yolo_split(DatasetCatalog.get(name), root, f"train/{name}")
        logger.info(f"YOLO export of {name}: {n} images, {b} boxes in {root}")
    n, b = write_yolo_split(DatasetCatalog.get(VAL_SET)[:num_val_images], root, "val")
    logger.info(f"YOLO export of the first {n} images of {VAL_SET} ({b} boxes): end-of-run val")
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        f"# written by tools/benchmark_yolo_peer.py\npath: {root}\n"
        f"train: [{', '.join('images/train/' + name for name in train_sets)}]\n"
        "val: images/val\nnames:\n  0: object\n"
    )
    return data_yaml


def train_yolo(args, data_yaml, run_dir):
    """
    Trains YOLOv8n from scratch for args.minutes of wall time, or for args.epochs epochs when
    given. Returns (weights, summary).
    """
    from ultralytics import YOLO

    marks = {"batches": 0, "epochs": 0}

    # The time mode stops right after the optimizer step that crosses the budget, before that
    # batch's on_train_batch_end; on_train_epoch_end follows, before any validation.
    def on_batch_start(trainer):
        marks["batches"] += 1

    def on_epoch_end(trainer):
        marks["epochs"] += 1
        marks["loop_end"], marks["train_time_start"] = time.time(), trainer.train_time_start

    if args.threads:
        # Ultralytics sets torch's CPU threads to cpu_count - 1 when it picks the device (1 on
        # two cores); --threads gives it what our training uses.
        import ultralytics.utils.torch_utils as torch_utils

        torch_utils.NUM_THREADS = args.threads
    model = YOLO("yolov8n.yaml")  # architecture only: no weights exist or are fetched
    model.add_callback("on_train_batch_start", on_batch_start)
    model.add_callback("on_train_epoch_end", on_epoch_end)
    # time is in hours; in time mode the epochs are re-estimated after each epoch to fit it
    length = {"epochs": args.epochs} if args.epochs else {"time": args.minutes / 60.0}
    t0 = time.time()
    # workers: Ultralytics sets 0 itself on CPU
    model.train(data=str(data_yaml), **length, imgsz=args.imgsz, batch=args.batch,
                workers=args.workers, device="cpu", pretrained=False, amp=False, plots=False,
                val=False, seed=args.seed, deterministic=True, project=str(run_dir.parent),
                name=run_dir.name, exist_ok=True, verbose=True)
    total = time.time() - t0
    loop = marks["loop_end"] - marks["train_time_start"]
    summary = {
        "budget_minutes": None if args.epochs else args.minutes, "budget_epochs": args.epochs,
        "train_loop_minutes": loop / 60.0, "train_call_minutes": total / 60.0,
        "batches": marks["batches"], "epochs": marks["epochs"],
        "images_seen": marks["batches"] * args.batch, "imgsz": args.imgsz, "batch": args.batch,
        "seed": args.seed, "threads": args.threads or "ultralytics default",
        "weights": str(model.trainer.last), "ultralytics": __import__("ultralytics").__version__,
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    logger.info(
        f"YOLOv8n trained for {loop / 60:.2f} min of training loop (budget {_budget(summary)}; "
        f"{marks['batches']} batches of {args.batch}, {marks['epochs']} epochs); "
        f"model.train() took {total / 60:.2f} min with setup and the end-of-run val"
    )
    return Path(model.trainer.last), summary


def _budget(summary):
    if summary.get("budget_epochs"):
        return f"{summary['budget_epochs']} epochs (not a wall time)"
    return f"{summary.get('budget_minutes')} min"


def yolo_as_detectron2(weights, imgsz, conf, iou, max_det, input_format):
    """
    A torch module taking Detectron2 test batches (images already resized by our test mapper)
    and returning ``[{"instances": Instances}]`` in original image coordinates, as our models do.
    """
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances
    from ultralytics import YOLO

    if input_format not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT {input_format} not supported here")

    class YOLOAsDetectron2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # Not a registered submodule: Module.eval() calls train(False) on its children, and
            # an Ultralytics model's train() starts training.
            self.__dict__["yolo"] = YOLO(str(weights))

        def forward(self, batched_inputs):
            return [{"instances": self._predict(x)} for x in batched_inputs]

        def _predict(self, x):
            image = x["image"].permute(1, 2, 0).numpy()  # HWC in cfg.INPUT.FORMAT
            if input_format == "RGB":
                image = image[:, :, ::-1]
            h_in, w_in = image.shape[:2]
            # numpy arrays are BGR to Ultralytics
            result = self.yolo.predict(np.ascontiguousarray(image), imgsz=imgsz, conf=conf,
                                       iou=iou, max_det=max_det, device="cpu", verbose=False)[0]
            height, width = x.get("height", h_in), x.get("width", w_in)
            boxes = result.boxes.xyxy.detach().float().cpu().clone()
            boxes[:, 0::2] *= width / w_in  # as detector_postprocess
            boxes[:, 1::2] *= height / h_in
            instances = Instances((height, width))
            instances.pred_boxes = Boxes(boxes)
            instances.pred_boxes.clip((height, width))
            instances.scores = result.boxes.conf.detach().float().cpu()
            instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
            return instances

    return YOLOAsDetectron2()


def detectron2_train_minutes(weights):
    """Minutes of training iterations in the log.txt beside a Detectron2 checkpoint, or None."""
    log = Path(weights).resolve().parent / "log.txt"
    if not log.is_file():
        return None
    # Detectron2: "Overall training speed: 598 iterations in 0:06:30 (0.6523 s / it)"
    found = re.findall(r"Overall training speed: \d+ iterations in (\d+):(\d+):(\d+)",
                       log.read_text())
    if not found:
        return None
    h, m, s = map(int, found[-1])
    return (h * 3600 + m * 60 + s) / 60.0


def fmt(x, digits=1):
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def markdown_table(rows, max_dets):
    ar = f"AR{max_dets}"
    lines = [f"| model | test input | train wall time (min) | {VAL_SET} AP | AP50 | AP75 "
             f"| {REAL_SET} AP | AP50 | AP75 | {ar} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        syn, real = r.get("synthetic") or {}, r.get("real") or {}
        cells = [r["model"], r["input"], fmt(r.get("minutes"), 2)]
        cells += [fmt(syn.get(k)) for k in ("AP", "AP50", "AP75")]
        cells += [fmt(real.get(k)) for k in ("AP", "AP50", "AP75", ar)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--minutes", type=float, default=7.0, help="training wall-time budget")
    add("--epochs", type=int, help="train this many epochs instead of --minutes (a seed spread on "
        "a machine of another speed: the epochs another run fitted into the budget)")
    add("--seed", type=int, default=0)
    add("--imgsz", type=int, default=256, help="YOLO train and test size")
    add("--batch", type=int, default=8)
    add("--workers", type=int, default=1, help="(Ultralytics uses 0 on CPU)")
    add("--threads", type=int,
        help="torch CPU threads for training (default: Ultralytics's own, cpu_count - 1)")
    add("--conf", type=float, default=0.001, help="test score threshold")
    add("--iou", type=float, default=0.7, help="test NMS IoU")
    add("--large-size", type=int, default=640,
        help="also evaluate the tobacco photos at this long side (0: skip)")
    add("--test-config", default=str(PROJECT_ROOT / "configs/synthetic/gln_R18.yaml"),
        help="config whose DATASETS.TRAIN YOLO trains on and whose test mapper feeds it "
        "(default: the quick start's; --ours's config when given)")
    add("--ours", nargs=2, metavar=("CONFIG", "WEIGHTS"), help="also evaluate our model")
    add("--ours-minutes", type=float, help="our train time (default: its log.txt)")
    add("--yolo-weights", help="evaluate this YOLO checkpoint instead of training one")
    add("--tobacco-root", default=str(PROJECT_ROOT.parent / "shared/data/tobacco_shelves"),
        help="folder with images/ and annotations.csv")
    add("--max-images", type=int, help="evaluate the first N images of each set")
    add("--output-dir", default=str(PROJECT_ROOT / "output/yolo_peer"))
    add("--table", default=str(PROJECT_ROOT / "output/yolo_peer/table.md"))
    add("--allow-network", action="store_true", help="do not block sockets")
    return parser.parse_args()


def report_notes(args, command, summary, train_sets, max_dets):
    """The Markdown lines above the table: the command, what both models saw, YOLO's run."""
    notes = [
        "# Peer benchmark: YOLOv8n from scratch vs ours", "", "Command:", "", f"    {command}", "",
        f"Both trained on {', '.join(f'`{n}`' for n in train_sets)} only, on this machine's CPU; "
        f"scored by `DenseCOCOEvaluator` at {max_dets} detections per image on `{VAL_SET}` and "
        f"on the 24 real photos `{REAL_SET}`, images read and resized by our test mapper. YOLO: "
        f"conf {args.conf}, NMS IoU {args.iou}. Train wall time: YOLO's training loop "
        "(Ultralytics `time=` mode, excluding setup and its end-of-run val); ours: Detectron2's "
        '"Overall training speed" line (iterations only).',
    ]
    if summary:
        notes += ["", f"YOLO run: budget {_budget(summary)}, {summary.get('batches')} batches of "
                  f"{summary.get('batch')} ({summary.get('images_seen')} images, "
                  f"{summary.get('epochs')} epochs), imgsz {summary.get('imgsz')}, "
                  f"seed {summary.get('seed')}."]
    if args.max_images:
        notes += ["", f"**Smoke run: first {args.max_images} images of each set only.**"]
    if BLOCKED_NETWORK:
        notes += ["", f"Network accesses blocked during the run: {len(BLOCKED_NETWORK)}."]
    return notes


def yolo_weights_and_summary(args, output_dir, train_sets):
    """Trains YOLO on the exported sets, or reads ``--yolo-weights`` and the run's summary."""
    if not args.yolo_weights:
        data_yaml = export_yolo_dataset(output_dir / "yolo_data", train_sets, num_val_images=4)
        return train_yolo(args, data_yaml, output_dir / "train")
    weights = Path(args.yolo_weights)
    summary_path = weights.resolve().parents[1] / SUMMARY_FILE
    return weights, json.loads(summary_path.read_text()) if summary_path.is_file() else {}


def yolo_rows(args, cfg, weights, summary, output_dir):
    """YOLO through our loader and evaluator: at the config's test size and at --large-size."""
    from gaussian_retina.evaluation.benchmark import evaluate_all

    def evaluate(test_cfg, size, names):
        model = yolo_as_detectron2(weights, size, args.conf, args.iou,
                                   cfg.TEST.DETECTIONS_PER_IMAGE, cfg.INPUT.FORMAT)
        rows, missing = evaluate_all(test_cfg, model, names,
                                     str(output_dir / "eval" / f"yolo_{size}"), args.max_images)
        for name, why in missing.items():
            logger.warning(f"{name} not evaluated: {why}")
        return rows

    name = f"YOLOv8n, from scratch (ultralytics {summary.get('ultralytics', '?')})"
    minutes, small = summary.get("train_loop_minutes"), cfg.INPUT.MAX_SIZE_TEST
    rows = evaluate(cfg, args.imgsz, [VAL_SET, REAL_SET])
    table = [dict(model=name, input=f"long side {small}, imgsz {args.imgsz}", minutes=minutes,
                  synthetic=rows.get(VAL_SET), real=rows.get(REAL_SET))]
    if args.large_size:
        big = cfg.clone()
        big.INPUT.MAX_SIZE_TEST = args.large_size
        big.INPUT.MIN_SIZE_TEST = int(round(args.large_size * cfg.INPUT.MIN_SIZE_TEST / small))
        rows = evaluate(big, args.large_size, [REAL_SET])
        table.append(dict(model=name, minutes=minutes, real=rows.get(REAL_SET),
                          input=f"long side {args.large_size}, imgsz {args.large_size} "
                          f"({REAL_SET} only)"))
    return table


def our_row(args, cfg, output_dir):
    """Our Detectron2 model on the same sets, same loader and evaluator."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from gaussian_retina.evaluation.benchmark import evaluate_all

    config_file, weights = args.ours
    cfg.MODEL.WEIGHTS = weights
    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    rows, _ = evaluate_all(cfg, model, [VAL_SET, REAL_SET], str(output_dir / "eval" / "ours"),
                           args.max_images)
    minutes = args.ours_minutes
    if minutes is None:
        minutes = detectron2_train_minutes(weights)
    return dict(model=f"ours, `{os.path.relpath(config_file)}`",
                input=f"long side {cfg.INPUT.MAX_SIZE_TEST}", minutes=minutes,
                synthetic=rows.get(VAL_SET), real=rows.get(REAL_SET))


def main():
    args = parse_args()
    if importlib.util.find_spec("ultralytics") is None:
        sys.exit(INSTALL_HINT)
    command = " ".join(
        shlex.quote(a) for a in [sys.executable, os.path.relpath(sys.argv[0])] + sys.argv[1:]
    )
    import torch
    from detectron2.utils.logger import setup_logger

    from gaussian_retina.engine import get_project_cfg
    from gaussian_retina.inference.evaluate import register_labelled_photos, write_table
    from gaussian_retina.shelves import configure_shelf_datasets

    setup_logger(name="detectron2")
    setup_logger(name="gaussian_retina")
    if not args.allow_network:
        block_internet()
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    import_ultralytics(output_dir / "ultralytics_config")  # exits with the install line if absent

    cfg = get_project_cfg(args.ours[0] if args.ours else args.test_config)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    train_sets = list(cfg.DATASETS.TRAIN)  # the peer sees what our model sees
    register_labelled_photos(REAL_SET, args.tobacco_root)
    configure_shelf_datasets(cfg, [VAL_SET, REAL_SET])  # the config's bad-input policy

    weights, summary = yolo_weights_and_summary(args, output_dir, train_sets)
    rows = yolo_rows(args, cfg, weights, summary, output_dir)
    if args.ours:
        rows.append(our_row(args, cfg, output_dir))
    max_dets = cfg.TEST.DETECTIONS_PER_IMAGE
    notes = report_notes(args, command, summary, train_sets, max_dets)
    print()
    write_table(notes + ["", markdown_table(rows, max_dets)], args.table)
    logger.info(f"Network accesses blocked: {len(BLOCKED_NETWORK)}")


if __name__ == "__main__":
    main()
