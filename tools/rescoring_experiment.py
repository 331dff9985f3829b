#!/usr/bin/env python3
"""
Experiment: rescore each detection by the predicted Gaussian map at its box centre,
score' = score * clip(map(centre), 0, 1) ** alpha, and compare AP (DenseCOCOEvaluator, 300
detections) with the plain scores on synthetic_shelves_val and the 24 TobaccoShelves photos.
Writes a Markdown table (results/inference.md, "Rescoring by the map", holds its figures):

    python tools/rescoring_experiment.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/synthetic/gln_R18/model_final.pth --table output/rescoring.md

The rule is fixed before looking (alpha in 0.5, 1: a square-root and a plain product); alpha is
chosen on synthetic_shelves_val, then checked on the tobacco photos; it is on by default
(gaussian_retina.inference.predictor.DEFAULT_RESCORE_ALPHA) only if it raises AP on both sets.
Inference as the predict command's default (``--tiling auto``, one pass on these photos);
rescoring happens per tile, before the merge.
"""

from detectron2.data import DatasetCatalog

from benchmark_harness import load_average
from gaussian_retina.inference import ShelfPredictor, training_product_side
from gaussian_retina.inference.evaluate import (
    photo_experiment_cfg,
    photo_experiment_parser,
    predict_records,
    register_labelled_photos,
    score_detections,
    write_table,
)
from gaussian_retina.shelves import configure_shelf_datasets

TOBACCO = "tobacco_shelves_24_rescoring"


def main():
    ap = photo_experiment_parser(__doc__)
    ap.add_argument("--val", default="synthetic_shelves_val")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = ap.parse_args()
    cfg = photo_experiment_cfg(args)
    load_before = load_average()
    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [args.val, TOBACCO])  # cfg's bad-input policy and COCO cache
    test_size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    predictor = ShelfPredictor(
        cfg, tiling="auto", train_product_side=training_product_side(args.val, test_size)
    )

    lines = [
        "| score | "
        + " | ".join(f"{n} AP | AP50 | AR300" for n in (args.val, "tobacco (24)"))
        + " |",
        "|---|" + "---:|---:|---:|" * 2,
    ]
    for alpha in args.alphas:
        predictor.rescore_alpha = alpha
        cells = []
        for name in (args.val, TOBACCO):
            preds, _ = predict_records(
                predictor, DatasetCatalog.get(name), cfg.INPUT.FORMAT, predictor.batch_size
            )
            m = score_detections(name, [(p.boxes, p.scores, p.classes) for p in preds])
            cells.append(f"{m['AP']:.1f} | {m['AP50']:.1f} | {m['AR300']:.1f}")
        label = "plain (alpha 0)" if alpha == 0 else f"score * map(centre)^{alpha:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"PyTorch threads {args.num_threads}; load average before {load_before}, after "
        f"{load_average()}."
    )
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
