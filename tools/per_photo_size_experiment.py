#!/usr/bin/env python3
"""
Experiment: does a test size chosen per photo, so that its products come out at the size the
model trained on, help on the 24 TobaccoShelves photos? Three ways to size each photo, scored with
DenseCOCOEvaluator at 300 detections:

* fixed: the config's test size (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), as benchmark_datasets.py;
* oracle: the photo's median labelled product (square root of the area) brought to the median
  training product at the training input size (an upper bound: it reads the labels);
* two-pass: the same with the median detection above --score-thresh of the fixed pass instead
  of the labels (what a predictor could do).

    python3 tools/per_photo_size_experiment.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/synthetic/gln_R18/model_final.pth --table output/per_photo_size.md

One pass per photo (no tiling), plain scores.
"""

import detectron2.data.transforms as T
import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from gaussian_retina.inference import ShelfPredictor
from gaussian_retina.inference.evaluate import (
    photo_experiment_cfg,
    photo_experiment_parser,
    predict_records,
    register_labelled_photos,
    score_detections,
    write_table,
)
from gaussian_retina.shelves import configure_shelf_datasets

TOBACCO = "tobacco_shelves_24_sizes"


def _sides(records):
    """Square roots of the labelled boxes' areas, per record, in the record's pixels."""
    out = []
    for r in records:
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in r["annotations"]]
        ).reshape(-1, 4)
        out.append(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    return out


def training_product_side(cfg) -> float:
    """Median product side (sqrt of the area) in the training input, at the largest train size."""
    short_train, long_train = max(cfg.INPUT.MIN_SIZE_TRAIN), cfg.INPUT.MAX_SIZE_TRAIN
    sides = []
    for name in cfg.DATASETS.TRAIN:
        records = DatasetCatalog.get(name)
        for r, s in zip(records, _sides(records)):
            short, long = sorted((r["height"], r["width"]))
            sides.append(s * min(short_train / short, long_train / long))
    return float(np.median(np.concatenate(sides)))


def main():
    ap = photo_experiment_parser(__doc__)
    ap.add_argument("--score-thresh", type=float, default=0.3)
    args = ap.parse_args()
    cfg = photo_experiment_cfg(args)
    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [TOBACCO])
    records = DatasetCatalog.get(TOBACCO)
    target = training_product_side(cfg)
    predictor = ShelfPredictor(cfg, tiling="off", rescore_alpha=0.0, with_map=False)
    fixed = predictor.resize

    def run(resizes):
        dets = []
        for r, resize in zip(records, resizes):
            predictor.resize = resize
            (p,), _ = predict_records(predictor, [r], cfg.INPUT.FORMAT)
            dets.append((p.boxes, p.scores, p.classes))
        return dets

    def per_photo(sides):
        # The long side is left free: the short side alone sets the scale. A photo with no size
        # estimate (None) keeps the fixed test size.
        return [
            (
                T.ResizeShortestEdge(int(round(min(r["height"], r["width"]) * target / s)), 10**6)
                if s is not None
                else fixed
            )
            for r, s in zip(records, sides)
        ]

    fixed_dets = run([fixed] * len(records))
    detected = []
    for boxes, scores, _ in fixed_dets:
        b = np.asarray(boxes)[np.asarray(scores) >= args.score_thresh]
        # The fixed pass's boxes are in the photo's pixels, as the labels are.
        sides = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        detected.append(float(np.median(sides)) if len(sides) else None)
    rows = {
        f"fixed ({cfg.INPUT.MIN_SIZE_TEST}, {cfg.INPUT.MAX_SIZE_TEST})": fixed_dets,
        "oracle: labelled median to the training median": run(
            per_photo([np.median(s) for s in _sides(records)])
        ),
        f"two-pass: detected median (score >= {args.score_thresh:g}) to the training median": run(
            per_photo(detected)
        ),
    }
    lines = [
        f"Training median product side {target:.1f} px; TobaccoShelves (24), 300 detections.",
        "",
        "| test size per photo | AP | AP50 | AP75 | AR300 | AR300@50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, dets in rows.items():
        m = score_detections(TOBACCO, dets)
        lines.append(
            f"| {label} | "
            + " | ".join(f"{m[k]:.1f}" for k in ("AP", "AP50", "AP75", "AR300", "AR300@50"))
            + " |"
        )
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
