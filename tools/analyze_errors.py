#!/usr/bin/env python3
"""
Where a model's false positives come from, on synthetic_shelves_val and on the 24 TobaccoShelves
photos: the detections above a score, sorted by gaussian_retina.evaluation.error_anatomy into
true positives, duplicates, shifted duplicates, mislocated boxes and background (above, below or
inside the annotated shelves), with the median edge offsets of the true positives. Writes a
Markdown table:

    python3 tools/analyze_errors.py \\
        --config-file configs/synthetic/gln_R18_real_shelves.yaml \\
        --weights output/synthetic/gln_R18_real_shelves/model_final.pth --table output/errors.md

Inference is the model's own at its test size, one pass per photo, plain scores (what
tools/benchmark_datasets.py scores); ``--rescore-alpha 0.5`` scores as the predict command does.
"""

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from gaussian_retina.evaluation import ERROR_KINDS, error_anatomy
from gaussian_retina.inference import ShelfPredictor
from gaussian_retina.inference.evaluate import (
    photo_experiment_cfg, photo_experiment_parser, predict_records, register_labelled_photos,
    write_table,
)
from gaussian_retina.shelves import configure_shelf_datasets

TOBACCO = "tobacco_shelves_24_errors"


def gt_boxes(record):
    return [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            for a in record["annotations"]]


def main():
    ap = photo_experiment_parser(__doc__)
    ap.add_argument("--val", default="synthetic_shelves_val")
    ap.add_argument("--score-thresh", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--rescore-alpha", type=float, default=0.0)
    args = ap.parse_args()
    cfg = photo_experiment_cfg(args)

    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [args.val, TOBACCO])
    predictor = ShelfPredictor(cfg, tiling="off", rescore_alpha=args.rescore_alpha, with_map=False)
    head = ["set", "score >=", "ground truth", "missed", *ERROR_KINDS, "TP edge offsets L/T/R/B"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in (args.val, TOBACCO):
        records = DatasetCatalog.get(name)
        preds, _ = predict_records(predictor, records, cfg.INPUT.FORMAT, predictor.batch_size)
        images = [(p.boxes, p.scores, gt_boxes(r)) for p, r in zip(preds, records)]
        for thresh in args.score_thresh:
            c = error_anatomy(images, thresh)
            cells = [name, f"{thresh:g}", c["ground truth"], c["missed"],
                     *(c[k] for k in ERROR_KINDS),
                     " / ".join(f"{x:+.2f}" for x in c["median edge offsets"])]
            lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    lines += [
        "",
        f"`{args.config_file}`, weights `{args.weights}`, rescoring alpha {args.rescore_alpha:g}; "
        "edge offsets: median over true positives of the detection's edge minus the ground "
        "truth's, over the ground truth's width or height (negative top: the box reaches above "
        "the product).",
    ]
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
