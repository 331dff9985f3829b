#!/usr/bin/env python3
"""
Product counts per photo against labelled counts: count MAE and mean relative error per method,
on synthetic_shelves_val and on the 24 TobaccoShelves photos. Writes a Markdown table
(results/counting_benchmark.md):

    python3 tools/benchmark_counting.py \\
        --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/reproduction/gln_R18/seed0/model_final.pth \\
        --table results/counting_benchmark.md

Methods, as the predict command computes them (gaussian_retina.inference.runner.photo_counts),
with the inference the command runs by default (``--tiling auto``, 150 products per photo):
  detections >= 0.5   a fixed, uncalibrated threshold (reference);
  detections          detections at the score threshold that minimises count MAE on the
                      calibration set;
  map_peaks           local maxima of the predicted Gaussian map above the calibrated height;
  map_mass            the map's mass over one product's (the template's mean times the mean
                      area of the calibrated detections): no threshold of its own.
Thresholds are calibrated on synthetic_shelves_val. Its own row is two-fold cross-validated
(calibrated on one half, counted on the other, both ways) so that it is not scored in-sample;
the tobacco row uses thresholds calibrated on the whole of synthetic_shelves_val.
"""

import time

import numpy as np
from detectron2.data import DatasetCatalog

from gaussian_retina.engine.benchmark import load_average
from gaussian_retina.inference import (
    ShelfPredictor,
    calibrate_threshold,
    count_detections,
    count_errors,
    count_map_peaks,
    products_per_image,
)
from gaussian_retina.inference.evaluate import (
    photo_experiment_cfg,
    photo_experiment_parser,
    predict_records,
    register_labelled_photos,
    write_table,
)
from gaussian_retina.inference.runner import photo_counts
from gaussian_retina.shelves import configure_shelf_datasets

TOBACCO = "tobacco_shelves_24_counting"
METHODS = ("detections >= 0.5", "detections", "map_peaks", "map_mass")


def calibrate(preds, true):
    thr, _ = calibrate_threshold([p.scores for p in preds], true, count_detections)
    peak, _ = calibrate_threshold([p.gaussian_map for p in preds], true, count_map_peaks)
    return thr, peak


def counts(preds, thr, peak, cfg):
    g = cfg.MODEL.GAUSSIAN
    out = {m: [] for m in METHODS}
    for p in preds:
        c = photo_counts(p, thr, peak, g.TEMPLATE_SIZE, g.SIGMA)
        out["detections >= 0.5"].append(count_detections(p.scores, 0.5))
        for m in METHODS[1:]:
            out[m].append(c[m])
    return out


def main():
    ap = photo_experiment_parser(__doc__)
    ap.add_argument("--val", default="synthetic_shelves_val")
    args = ap.parse_args()
    cfg = photo_experiment_cfg(args)
    load_before = load_average()
    t0 = time.perf_counter()

    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [args.val, TOBACCO])  # cfg's bad-input policy and COCO cache
    predictor = ShelfPredictor(
        cfg,
        tiling="auto",
        products_per_photo=150.0,
        products_per_train_image=products_per_image(args.val),
    )
    sets = {}
    for name in (args.val, TOBACCO):
        records = DatasetCatalog.get(name)
        preds, _ = predict_records(predictor, records, cfg.INPUT.FORMAT, predictor.batch_size)
        sets[name] = (preds, np.array([len(r["annotations"]) for r in records], float))

    val_preds, val_true = sets[args.val]
    thr, peak = calibrate(val_preds, val_true)
    rows = []
    # Two-fold cross-validation on the calibration set itself.
    idx = np.arange(len(val_preds))
    folds = [idx[::2], idx[1::2]]
    cv_pred, cv_true = {m: [] for m in METHODS}, []
    for a, b in (folds, folds[::-1]):
        t, pk = calibrate([val_preds[i] for i in a], val_true[a])
        c = counts([val_preds[i] for i in b], t, pk, cfg)
        for m in METHODS:
            cv_pred[m].extend(c[m])
        cv_true.extend(val_true[b])
    rows.append((f"{args.val} (2-fold CV)", cv_pred, cv_true))
    tob_preds, tob_true = sets[TOBACCO]
    rows.append(("tobacco_shelves (24 photos)", counts(tob_preds, thr, peak, cfg), tob_true))

    lines = [
        "| set | mean true count | " + " | ".join(f"{m} MAE | rel. err." for m in METHODS) + " |",
        "|---|---:|" + "---:|---:|" * len(METHODS),
    ]
    for name, pred, true in rows:
        cells = []
        for m in METHODS:
            e = count_errors(pred[m], true)
            cells.append(f"{e['mae']:.1f} | {100 * e['mean_rel_error']:.0f} %")
        lines.append(f"| {name} | {np.mean(true):.1f} | " + " | ".join(cells) + " |")
    means = {m: np.mean(rows[1][1][m]) for m in METHODS}
    lines += [
        "",
        f"Thresholds calibrated on all of {args.val} (used for tobacco and by the predict "
        f"command): detection score {thr:.2f}, map peak height {peak:.2f}. Mean predicted count "
        "on tobacco: " + ", ".join(f"{m} {v:.1f}" for m, v in means.items()) + ".",
        f"PyTorch threads {args.num_threads}; load average before {load_before}, after "
        f"{load_average()}; {time.perf_counter() - t0:.0f} s in all.",
    ]
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
