#!/usr/bin/env python3
"""
Tiled inference where it matters: ``--tiling auto`` against a single resized pass (``off``) and
against SAHI (PyPI ``sahi``, its Detectron2 wrapper on the same model, on the same tiles and
overlap that ``auto`` chose for each photo), on synthetic_shelves_val_large (12 phone-photo-sized
scenes of 300-600 products) and the 24 TobaccoShelves photos. AP, AP50, AP75, AR300 with
DenseCOCOEvaluator at 300 detections per photo (the command's default cap; the large scenes hold
more products than that, which caps their AR), tiles per photo and seconds per photo. Writes a
Markdown table:

    python tools/benchmark_tiling.py --config-file configs/synthetic/gln_R18.yaml \
        --weights output/quickstart/model_final.pth --table results/tiling.md

SAHI is not a dependency of gaussian_retina; run it with a Python that has ``sahi`` (a virtualenv
made with --system-site-packages sees torch and detectron2), or leave ``sahi`` out of
``--methods``. SAHI runs Detectron2's DefaultPredictor (no Gaussian-map rescoring): the row
"auto, plain scores" is ours without the rescoring, for a like-for-like comparison. Times cover
prediction on the decoded photo, one photo per call, after one warm-up photo; ours include
``auto``'s probe pass.
"""

import argparse
import hashlib
import os
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.engine import get_project_cfg
from gaussian_retina.inference import ShelfPredictor, training_product_side
from gaussian_retina.inference.evaluate import register_labelled_photos, score_detections
from gaussian_retina.inference.evaluate import write_table
from gaussian_retina.shelves import configure_shelf_datasets

TOBACCO = "tobacco_shelves_24_tiling"
LABELS = {
    "off": "single resized pass (`--tiling off`)",
    "auto": "`--tiling auto` (the default)",
    "auto_plain": "`--tiling auto`, plain scores (`--rescore-alpha 0`)",
    "sahi_tiles": "SAHI, auto's tiles and overlap, no full-photo pass",
    "sahi": "SAHI, auto's tiles and overlap, plus its full-photo pass",
}


def _key(image):
    return hashlib.sha1(image[::97, ::89].tobytes()).hexdigest() + str(image.shape)


def sahi_model(cfg):
    """SAHI's Detectron2 wrapper, loading our config (its load_model knows Detectron2's keys)."""
    from detectron2.engine import DefaultPredictor
    from sahi.models.detectron2 import Detectron2DetectionModel

    class ShelfDetectron2Model(Detectron2DetectionModel):
        def load_model(self):
            self.model = DefaultPredictor(cfg)
            self.category_names = ["object"]

    return ShelfDetectron2Model(model_path=cfg.MODEL.WEIGHTS, config_path=None, device="cpu",
                                confidence_threshold=cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                                category_mapping={"0": "object"}, load_at_init=True)


def sahi_predict_fn(model, grid_for, standard_pred=True):
    """SAHI on the tiles ``grid_for(image)`` gives (its tile size and overlap)."""
    from sahi.predict import get_sliced_prediction

    def predict(images):
        out = []
        for image in images:  # SAHI takes one photo at a time
            grid = grid_for(image)
            th, tw = grid.tile_size
            # Our grid spreads its tiles evenly; SAHI takes the overlap as a ratio of the tile.
            cols, rows = sorted({w[0] for w in grid.windows}), sorted({w[1] for w in grid.windows})
            ox = (tw - (cols[1] - cols[0])) / tw if len(cols) > 1 else 0.2
            oy = (th - (rows[1] - rows[0])) / th if len(rows) > 1 else 0.2
            res = get_sliced_prediction(
                np.ascontiguousarray(image[:, :, ::-1]), model, slice_height=th, slice_width=tw,
                overlap_height_ratio=oy, overlap_width_ratio=ox, verbose=0,
                perform_standard_pred=standard_pred)
            preds = res.object_prediction_list
            out.append((np.array([p.bbox.to_xyxy() for p in preds], np.float32).reshape(-1, 4),
                        np.array([p.score.value for p in preds], np.float32),
                        np.array([p.category.id for p in preds], np.int64)))
        return out

    return predict


def ours_predict_fn(predictor, grids):
    def predict(images):
        preds = predictor(images)
        for image, p in zip(images, preds):
            grids[_key(image)] = p.grid  # SAHI then slices the photo as auto did
        return [(p.boxes, p.scores, p.classes) for p in preds]

    return predict


def run(fn, records, fmt):
    """Detections per record, and seconds per photo (prediction only)."""
    images = (read_shelf_image(r, fmt) for r in records)
    dets, seconds = [], []
    for image in images:
        t0 = time.perf_counter()
        dets.extend(fn([image]))
        seconds.append(time.perf_counter() - t0)
    return dets, float(np.mean(seconds))


def predict_fn(method, cfg, train_side, grids):
    """The detector of ``method``; ``auto`` records its grids, which the SAHI methods slice by."""
    if method.startswith("sahi"):
        return sahi_predict_fn(sahi_model(cfg), lambda im: grids[_key(im)], method == "sahi")
    predictor = ShelfPredictor(
        cfg, tiling="off" if method == "off" else "auto", train_product_side=train_side,
        with_map=False, **({"rescore_alpha": 0.0} if method == "auto_plain" else {}))
    return ours_predict_fn(predictor, grids if method == "auto" else {})


def evaluate_method(method, dataset, cfg, train_side, grids):
    """One row of the table: the method's AP, AR, tiles and seconds per photo on ``dataset``."""
    records = DatasetCatalog.get(dataset)
    fn = predict_fn(method, cfg, train_side, grids)
    fn([read_shelf_image(records[0], cfg.INPUT.FORMAT)])  # warm-up
    dets, sec = run(fn, records, cfg.INPUT.FORMAT)
    tiles = 1.0
    if method != "off":
        tiles = np.mean([grids[_key(read_shelf_image(r, cfg.INPUT.FORMAT))].num_tiles
                         for r in records])
    metrics = score_detections(dataset, dets, cfg.TEST.DETECTIONS_PER_IMAGE)
    return dict(dataset=dataset, method=LABELS[method], sec=sec, tiles=tiles, **metrics)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--tobacco-root", default="../shared/data/tobacco_shelves")
    p.add_argument("--large", default="synthetic_shelves_val_large")
    p.add_argument("--methods", nargs="+", choices=list(LABELS), default=list(LABELS))
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--table", help="write the Markdown table here")
    args = p.parse_args()
    setup_logger(name="gaussian_retina")
    torch.set_num_threads(args.num_threads)
    cfg = get_project_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu"])
    cfg.freeze()
    register_labelled_photos(TOBACCO, args.tobacco_root)
    scale_set = cfg.DATASETS.TEST[0]
    configure_shelf_datasets(cfg, [scale_set, args.large, TOBACCO])
    test_size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    train_side = training_product_side(scale_set, test_size)
    load_before = os.getloadavg()

    grids = {}
    lines = ["| set | method | tiles/photo | s/photo | AP | AP50 | AP75 | AR300 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for dataset in (args.large, TOBACCO):
        for method in args.methods:
            r = evaluate_method(method, dataset, cfg, train_side, grids)
            print(r, flush=True)
            lines.append(f"| {r['dataset']} | {r['method']} | {r['tiles']:.1f} | {r['sec']:.2f} | "
                         + " | ".join(f"{r[k]:.1f}" for k in ("AP", "AP50", "AP75", "AR300"))
                         + " |")
    load = [", ".join(f"{v:.2f}" for v in x) for x in (load_before, os.getloadavg())]
    lines += ["", f"Training scale: median product side {train_side:.1f} input pixels ({scale_set} "
              f"at {test_size[0]}x{test_size[1]}). PyTorch threads {args.num_threads}; load "
              f"average before {load[0]}, after {load[1]}."]
    write_table(lines, args.table)


if __name__ == "__main__":
    main()
