"""
The YOLOv8n peer of tools/finetune_learning_curve.py: fine-tunes Ultralytics YOLOv8n from a
checkpoint of its own on a registered shelf dataset for a wall-time budget on a given number of
torch threads, and wraps the result as a Detectron2-style model for the project's evaluator.
Imported by that tool when it runs with ``--peer yolo`` (under the peers' virtualenv).
"""

import csv
import time
from pathlib import Path

from benchmark_yolo_peer import import_ultralytics, yolo_as_detectron2


def finetune_yolo(args, run_dir, train_name, seed):
    """
    Fine-tunes ``args.weights`` (a YOLO ``.pt``) on ``train_name`` for ``args.minutes`` on
    ``args.threads`` threads at ``args.imgsz``. Returns (best weights, training-loop minutes).
    """
    from detectron2.data import DatasetCatalog

    run_dir = Path(run_dir)
    last, log = run_dir / "weights" / "last.pt", run_dir / "results.csv"
    if last.is_file() and log.is_file():
        # A finished run in the same output folder is scored again, not trained again (as ours):
        # its minutes are Ultralytics's own training time, logged per epoch.
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        return last, float(rows[-1]["time"]) / 60.0
    import_ultralytics(run_dir.parent / "yolo_config")
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    from gaussian_retina.shelves.coco_yolo import write_yolo_split

    # Ultralytics sets torch's CPU threads to cpu_count - 1 (1 on 2 cores) when it selects the
    # device; the comparison gives both detectors the same threads.
    torch_utils.NUM_THREADS = args.threads
    data = run_dir / "data"
    records = DatasetCatalog.get(train_name)
    write_yolo_split(records, data, "train")
    write_yolo_split(records[:2], data, "val")  # Ultralytics validates once at the end
    data_yaml = data / "data.yaml"
    data_yaml.write_text(f"path: {data}\ntrain: images/train\nval: images/val\nnames:\n  0: object\n")
    marks = {}

    def on_epoch_end(trainer):
        marks["loop_end"] = time.time()
        marks["start"] = trainer.train_time_start

    model = YOLO(str(args.weights))
    model.add_callback("on_train_epoch_end", on_epoch_end)
    model.train(
        data=str(data_yaml),
        time=args.minutes / 60.0,
        imgsz=args.imgsz,
        batch=8,
        workers=1,
        device="cpu",
        amp=False,
        plots=False,
        val=False,
        seed=seed,
        deterministic=True,
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        verbose=False,
    )
    minutes = (marks["loop_end"] - marks["start"]) / 60.0
    return Path(model.trainer.last), minutes


def yolo_scorer(args, cfg, weights):
    """(test cfg, model): our test loader resizes to a long side of ``args.imgsz``, as YOLO
    is trained; YOLO predicts with its validation defaults (conf 0.001, 300 detections) and NMS
    at ``args.nms_iou`` (its default 0.7)."""
    cfg = cfg.clone()
    cfg.INPUT.MIN_SIZE_TEST = args.imgsz
    cfg.INPUT.MAX_SIZE_TEST = args.imgsz
    model = yolo_as_detectron2(weights, args.imgsz, 0.001, args.nms_iou, 300, cfg.INPUT.FORMAT)
    return cfg, model
