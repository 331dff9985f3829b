#!/usr/bin/env python3
"""
Product counts per photo against labelled counts, with the predict command's default inference:
count MAE over the mean true count per method, on the two folds of the 24 TobaccoShelves photos
and on synthetic_shelves_val. Writes a Markdown table:

    python tools/benchmark_counting.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/quickstart/model_final.pth --table results/counting.md

Folds: per camera (file names C1..C4), its six photos sorted by name; fold A holds positions
0, 2, 4, fold B positions 1, 3, 5. The command's default thresholds were chosen on fold A only
(the "fold A's best" line searches them again); fold B is the held-out check. Methods:
  map peaks       local maxima of the Gaussian map at least DEFAULT_PEAK_THRESHOLD high (the
                  command's count for models with the branch);
  detections      detections scoring at least DEFAULT_COUNT_THRESHOLD, before the detection cap;
  map mass        the map's mass over one product's (no threshold of its own);
  ... calibrated on synthetic val   the same at the thresholds that minimise count MAE on
                  synthetic_shelves_val (what calibrating on the synthetic set would give).
"""

import os

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from gaussian_retina.inference import (
    DEFAULT_COUNT_THRESHOLD,
    DEFAULT_PEAK_THRESHOLD,
    ShelfPredictor,
    calibrate_threshold,
    count_detections,
    count_map_peaks,
    photo_counts,
    training_product_side,
)
from gaussian_retina.inference.evaluate import (
    photo_experiment_cfg,
    photo_experiment_parser,
    predict_records,
    register_labelled_photos,
    write_table,
)
from gaussian_retina.shelves import configure_shelf_datasets
from gaussian_retina.shelves.validate import labelled_twice

TOBACCO = "tobacco_shelves_24_counting"


def folds(records):
    """Indices of fold A and fold B (see the module's docstring)."""
    by_camera = {}
    for i in sorted(range(len(records)), key=lambda i: os.path.basename(records[i]["file_name"])):
        by_camera.setdefault(os.path.basename(records[i]["file_name"])[:2], []).append(i)
    a = [i for cam in sorted(by_camera) for i in by_camera[cam][0::2]]
    b = [i for cam in sorted(by_camera) for i in by_camera[cam][1::2]]
    return a, b


def count_once(record):
    """The record's boxes, a product labelled twice (``labelled_twice``) counted once."""
    xyxy = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in record["annotations"]]
    return len(xyxy) - len({j for _, j, _ in labelled_twice(xyxy)})


def relative_mae(pred, true):
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    return np.abs(pred - true).mean() / true.mean(), pred.mean() / true.mean()


def main():
    ap = photo_experiment_parser(__doc__)
    ap.add_argument("--val", default="synthetic_shelves_val")
    ap.add_argument("--calibration-fold", choices=["A", "B"], default="A", help="the fold the "
                    "'calibrated on fold' rows calibrate on, as --calibration-dataset would: the "
                    "fold a fine-tuned model was trained on")
    args = ap.parse_args()
    cfg = photo_experiment_cfg(args)
    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [args.val, TOBACCO])
    predictor = ShelfPredictor(
        cfg,
        tiling="auto",
        train_product_side=training_product_side(
            cfg.DATASETS.TEST[0], (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        ),
    )
    sets = {}
    for name in (TOBACCO, args.val):
        records = DatasetCatalog.get(name)
        preds, _ = predict_records(predictor, records, cfg.INPUT.FORMAT, predictor.batch_size)
        sets[name] = (records, preds, [len(r["annotations"]) for r in records])
    records, tob_preds, tob_true = sets[TOBACCO]
    fold_a, fold_b = folds(records)
    _, val_preds, val_true = sets[args.val]
    syn_thr, _ = calibrate_threshold([p.all_scores for p in val_preds], val_true, count_detections)
    syn_peak, _ = calibrate_threshold([p.gaussian_map for p in val_preds], val_true, count_map_peaks)
    cal = fold_a if args.calibration_fold == "A" else fold_b
    cal_preds, cal_true = [tob_preds[i] for i in cal], [tob_true[i] for i in cal]
    fold_thr, _ = calibrate_threshold([p.all_scores for p in cal_preds], cal_true, count_detections)
    fold_peak, _ = calibrate_threshold([p.gaussian_map for p in cal_preds], cal_true, count_map_peaks)
    calibrated = {"syn": (syn_thr, syn_peak), "fold": (fold_thr, fold_peak)}
    g = cfg.MODEL.GAUSSIAN

    def method_counts(preds, thr, peak):
        c = [photo_counts(p, thr, peak, g.TEMPLATE_SIZE, g.SIGMA) for p in preds]
        return {m: [x[m] for x in c] for m in ("map_peaks", "detections", "map_mass")}

    columns = [
        ("fold A (chosen on)", [tob_preds[i] for i in fold_a], [tob_true[i] for i in fold_a]),
        ("fold B (held out)", [tob_preds[i] for i in fold_b], [tob_true[i] for i in fold_b]),
        (args.val, val_preds, val_true),
    ]
    rows = [
        ("map peaks >= %.2f (default)" % DEFAULT_PEAK_THRESHOLD, "map_peaks", None),
        ("detections >= %.2f" % DEFAULT_COUNT_THRESHOLD, "detections", None),
        ("map mass", "map_mass", None),
        ("map peaks >= %.2f, calibrated on synthetic val" % syn_peak, "map_peaks", "syn"),
        ("detections >= %.2f, calibrated on synthetic val" % syn_thr, "detections", "syn"),
        ("map peaks >= %.2f, calibrated on fold %s" % (fold_peak, args.calibration_fold), "map_peaks", "fold"),
        ("detections >= %.2f, calibrated on fold %s" % (fold_thr, args.calibration_fold), "detections", "fold"),
    ]
    lines = [
        "| count | " + " | ".join(f"{c[0]} MAE / mean, pred / true" for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
        "| mean true count | " + " | ".join(f"{np.mean(c[2]):.1f}" for c in columns) + " |",
    ]
    # validate_dataset finds products labelled twice in some photos: the same count against
    # labels that count each of them once.
    once = [count_once(r) for r in records]
    folds_once = [(preds, [once[i] for i in idx]) for (_, preds, _), idx in zip(columns, (fold_a, fold_b))]
    for label, method, calib in rows:
        thr, peak = calibrated.get(calib, (DEFAULT_COUNT_THRESHOLD, DEFAULT_PEAK_THRESHOLD))
        cells = []
        for _, preds, true in columns:
            err, ratio = relative_mae(method_counts(preds, thr, peak)[method], true)
            cells.append(f"{100 * err:.1f} %, {ratio:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for preds, true in folds_once:
        peaks = method_counts(preds, fold_thr, fold_peak)["map_peaks"]
        err, ratio = relative_mae(peaks, true)
        cells.append(f"{100 * err:.1f} %, {ratio:.2f}x")
    label = (f"map peaks >= {fold_peak:.2f}, calibrated on fold {args.calibration_fold}, against "
             "labels counting each product once")
    lines.append(f"| {label} | " + " | ".join(cells) + " | |")
    # The search the defaults came from, on fold A only.
    a_preds, a_true = columns[0][1], columns[0][2]
    best_thr, _ = calibrate_threshold([p.all_scores for p in a_preds], a_true, count_detections)
    best_peak, _ = calibrate_threshold([p.gaussian_map for p in a_preds], a_true, count_map_peaks)
    lines += [
        "",
        f"Fold A's best thresholds (count MAE): detections {best_thr:.2f}, map peaks "
        f"{best_peak:.2f}. Fold A: "
        + ", ".join(os.path.basename(records[i]["file_name"]) for i in fold_a)
        + f". Inference: the command's defaults (`--tiling auto`, rescoring), "
        f"{args.num_threads} PyTorch thread(s).",
    ]
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
