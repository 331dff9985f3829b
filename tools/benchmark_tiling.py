#!/usr/bin/env python3
"""
Sliced inference on real photos at full resolution: our tiled predictor against a single resized
pass and against SAHI (PyPI ``sahi``, its Detectron2 wrapper on the same model), on the 24
TobaccoShelves photos (AP, AP50, AP75, AR300 with DenseCOCOEvaluator at 300 detections) and the
4 SKU-110K photos (time only: no boxes). Writes a Markdown table (results/tiling_benchmark.md).

SAHI is not a dependency of gaussian_retina; run this from the peers' virtualenv, which sees the
system torch and detectron2 (see tools/benchmark_yolo_peer.py):

    ~/venv-peers/bin/pip install sahi
    ~/venv-peers/bin/python \\
        tools/benchmark_tiling.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/reproduction/gln_R18/seed0/model_final.pth \\
        --table results/tiling_benchmark.md

Methods (``--methods``):
  single   one pass over the photo resized to the test size (``--tiling off``);
  auto     ``--tiling auto`` with the command's default prior (150 products per photo);
  dense    ``--tiling auto`` with the prior at the issue's upper end (``--dense-prior``, 300);
  sahi     SAHI ``get_sliced_prediction`` on the same tiles as ``dense`` (same tile size and
           overlap ratio), with its defaults otherwise: a full-photo pass added
           (perform_standard_pred), GREEDYNMM merge on IOS 0.5, one slice at a time;
  sahi_tiles  the same without SAHI's full-photo pass: the tiles only, as ``dense``.
Each method is warmed up on one photo before it is timed; times cover prediction on the decoded
photo, one photo per call (decoding is the same for all and is reported once). The machine's load
drifts: methods take turns photo by photo in a rotated order, ``--rounds`` times, and a photo's
time is its median over the rounds. Our predictor's time includes the Gaussian branch (it rescores
the detections by default); SAHI runs Detectron2's DefaultPredictor, without it.
"""

import argparse
import logging
import os
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.shelves import configure_shelf_datasets
from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.evaluation.benchmark import subset
from gaussian_retina.inference import ShelfPredictor, find_images, products_per_image
from gaussian_retina.inference.evaluate import (
    predict_records,
    register_labelled_photos,
    score_detections,
    write_table,
)

logger = logging.getLogger("gaussian_retina.benchmark_tiling")
TOBACCO = "tobacco_shelves_24_tiling"


def build_cfg(config_file, weights):
    cfg = get_project_cfg(config_file, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
    cfg.freeze()
    return cfg


def sahi_model(cfg):
    """SAHI's Detectron2 wrapper, loading our config (its load_model knows Detectron2's keys)."""
    from detectron2.engine import DefaultPredictor
    from sahi.models.detectron2 import Detectron2DetectionModel

    class ShelfDetectron2Model(Detectron2DetectionModel):
        def load_model(self):
            self.model = DefaultPredictor(cfg)
            self.category_names = ["object"]

    return ShelfDetectron2Model(
        model_path=cfg.MODEL.WEIGHTS,
        config_path=None,
        device="cpu",
        confidence_threshold=cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
        category_mapping={"0": "object"},
        load_at_init=True,
    )


def sahi_predict_fn(model, grid_for, standard_pred=True):
    from sahi.predict import get_sliced_prediction

    def predict(images):
        out = []
        for image in images:  # SAHI takes one photo at a time
            grid = grid_for(image.shape[:2])
            th, tw = grid.tile_size
            # Our grid spreads its tiles evenly; SAHI takes the overlap as a ratio of the tile.
            cols, rows = sorted({w[0] for w in grid.windows}), sorted({w[1] for w in grid.windows})
            ox = (tw - (cols[1] - cols[0])) / tw if len(cols) > 1 else 0.2
            oy = (th - (rows[1] - rows[0])) / th if len(rows) > 1 else 0.2
            res = get_sliced_prediction(
                np.ascontiguousarray(image[:, :, ::-1]),
                model,
                slice_height=th,
                slice_width=tw,
                overlap_height_ratio=oy,
                overlap_width_ratio=ox,
                verbose=0,
                perform_standard_pred=standard_pred,
            )
            preds = res.object_prediction_list
            out.append(
                (
                    np.array([p.bbox.to_xyxy() for p in preds], np.float32).reshape(-1, 4),
                    np.array([p.score.value for p in preds], np.float32),
                    np.array([p.category.id for p in preds], np.int64),
                )
            )
        return out

    return predict


def ours_predict_fn(predictor):
    def predict(images):
        return [(p.boxes, p.scores, p.classes) for p in predictor(images)]

    return predict


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--tobacco-root", default="../shared/data/tobacco_shelves")
    p.add_argument("--sku-root", default="../shared/data/sku110k_photos")
    p.add_argument(
        "--methods", nargs="+", default=["single", "auto", "dense", "sahi", "sahi_tiles"]
    )
    p.add_argument("--dense-prior", type=float, default=300.0)
    p.add_argument("--reference-dataset", default="synthetic_shelves_val")
    p.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="1: the machine's other core is busy; more threads then slow PyTorch down",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (median per photo)")
    p.add_argument("--table", help="write the Markdown table here")
    args = p.parse_args()
    setup_logger(name="gaussian_retina")
    torch.set_num_threads(args.num_threads)
    cfg = build_cfg(args.config_file, args.weights)
    load_before = os.getloadavg()

    register_labelled_photos(TOBACCO, args.tobacco_root)
    configure_shelf_datasets(cfg, [args.reference_dataset, TOBACCO])  # cfg's dataset options
    name = subset(TOBACCO, args.max_images)  # the first images only, for smoke runs
    tobacco = DatasetCatalog.get(name)
    sku = [{"file_name": f, "apply_exif": True} for f in find_images([args.sku_root])]
    train_density = products_per_image(args.reference_dataset)

    t0 = time.perf_counter()
    for r in tobacco + sku:
        read_shelf_image(r, cfg.INPUT.FORMAT)
    decode = (time.perf_counter() - t0) / len(tobacco + sku)

    def ours(tiling, prior):
        return ShelfPredictor(
            cfg,
            tiling=tiling,
            products_per_photo=prior,
            products_per_train_image=train_density,
            batch_size=args.batch_size,
            with_map=False,
        )

    dense = ours("auto", args.dense_prior)
    methods = []
    for method in args.methods:
        if method == "single":
            predictor = ours("off", 150.0)
            fn, label = ours_predict_fn(predictor), "single resized pass (`--tiling off`)"
        elif method == "auto":
            predictor = ours("auto", 150.0)
            fn, label = (
                ours_predict_fn(predictor),
                "ours, `--tiling auto` (prior 150 products/photo)",
            )
        elif method == "dense":
            predictor = dense
            fn, label = (
                ours_predict_fn(predictor),
                f"ours, `--tiling auto --products-per-photo {args.dense_prior:g}`",
            )
        elif method == "sahi":
            predictor = dense
            fn, label = (
                sahi_predict_fn(sahi_model(cfg), dense.grid_for),
                "SAHI 0.12 (Detectron2 wrapper), same tiles as `dense`, plus its full-photo pass",
            )
        elif method == "sahi_tiles":
            predictor = dense
            fn = sahi_predict_fn(sahi_model(cfg), dense.grid_for, standard_pred=False)
            label = "SAHI, same tiles, without its full-photo pass (`perform_standard_pred=False`)"
        else:
            raise SystemExit(f"unknown method {method!r}")
        methods.append((method, label, fn, predictor))

    # Accuracy: one pass per method over the tobacco photos.
    rows = []
    for method, label, fn, predictor in methods:
        dets, _ = predict_records(fn, tobacco, cfg.INPUT.FORMAT, 1)
        metrics = score_detections(name, dets, cfg.TEST.DETECTIONS_PER_IMAGE)
        tiles_t = np.mean(
            [predictor.grid_for((r["height"], r["width"])).num_tiles for r in tobacco]
        )
        tiles_s = np.mean(
            [predictor.grid_for(read_shelf_image(r, "BGR").shape[:2]).num_tiles for r in sku]
        )
        rows.append(dict(key=method, method=label, tiles_t=tiles_t, tiles_s=tiles_s, **metrics))
        logger.info(f"{method}: {rows[-1]}")

    # Time: the load on this machine drifts, so methods take turns photo by photo, in a rotated
    # order each round, and each photo's time is its median over the rounds.
    images = [read_shelf_image(r, cfg.INPUT.FORMAT) for r in tobacco + sku]
    for _, _, fn, _ in methods:
        fn(images[:1])  # warm-up
    times = np.zeros((len(methods), len(images), args.rounds))
    for k in range(args.rounds):
        for i, image in enumerate(images):
            for j in np.roll(np.arange(len(methods)), i + k):
                t0 = time.perf_counter()
                methods[j][2]([image])
                times[j, i, k] = time.perf_counter() - t0
        logger.info(f"timing round {k + 1}/{args.rounds} done")
    per_photo = np.median(times, axis=2)
    for row, t in zip(rows, per_photo):
        row["sec_t"], row["sec_s"] = t[: len(tobacco)].mean(), t[len(tobacco) :].mean()

    load_after = os.getloadavg()
    lines = [
        "| method | tiles/photo (tobacco, SKU) | s/photo tobacco (24) | s/photo SKU-110K (4) | "
        "tobacco AP | AP50 | AP75 | AR300 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['tiles_t']:.1f}, {r['tiles_s']:.1f} | {r['sec_t']:.2f} | "
            f"{r['sec_s']:.2f} | {r['AP']:.1f} | {r['AP50']:.1f} | {r['AP75']:.1f} | "
            f"{r['AR300']:.1f} |"
        )
    lines += [
        "",
        f"Decoding a photo (not in the times): {decode:.2f} s on average. PyTorch threads: "
        f"{args.num_threads}. Times: median of {args.rounds} interleaved rounds per photo, mean "
        "over photos. Load average (1, 5, 15 min) before: "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after: "
        + ", ".join(f"{v:.2f}" for v in load_after)
        + f". Training products per image "
        f"({args.reference_dataset}): {train_density:.1f}.",
    ]
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
