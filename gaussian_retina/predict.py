"""
Detect and count products in shelf photos with a trained model, in the spirit of Detectron2's
``demo/demo.py``:

    gaussian-retina-predict --config-file configs/synthetic/gln_R18.yaml \
        --weights model_final.pth --input photos/ "more/*.jpg" --output predictions/ --overlay

(or ``python -m gaussian_retina.predict ...``). Writes per photo a CSV of boxes and scores in the
SKU-110K layout (no header, integer pixels, a score column), the same rows for the whole run,
counts.csv, one COCO json for the run, optional overlay PNGs, and summary.json with the counts,
the count threshold used, skipped photos and timings. Outputs are named by the photo's path under
the inputs' common folder. The run-level files grow as the run goes; the same command on the same
output folder resumes a run that was stopped.
"""

import argparse
import logging
import re

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.inference import (
    ShelfPredictor,
    calibrate_counts,
    find_images,
    input_root,
    output_names,
    parse_tiling,
    run_prediction,
    training_product_side,
)
from gaussian_retina.inference.counting import DEFAULT_COUNT_THRESHOLD, DEFAULT_PEAK_THRESHOLD
from gaussian_retina.inference.run_outputs import SettingsMismatchError
from gaussian_retina.shelves import configure_shelf_datasets, register_cfg_datasets

logger = logging.getLogger("gaussian_retina.predict")


def get_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    p.add_argument("--weights", help="checkpoint (else MODEL.WEIGHTS, from the config or --opts)")
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="photos: files, folders (searched recursively) or glob patterns",
    )
    p.add_argument("--output", required=True, help="folder for the CSVs, json, overlays, summary")
    p.add_argument(
        "--device",
        type=_device,
        help="cpu, cuda or cuda:N (default: MODEL.DEVICE when --opts gives it, else cuda when "
        "available, else cpu)",
    )
    p.add_argument(
        "--num-threads",
        type=int,
        help="CPU threads of PyTorch (default: its own, one per core; fewer is faster "
        "on a machine whose cores are busy with other work)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument(
        "--conf",
        type=float,
        help="write the detections scoring at least this (default: the count threshold, so "
        "that the files hold the boxes counted; 0 writes all, e.g. for AP)",
    )
    p.add_argument(
        "--max-det",
        type=int,
        help="detections written per photo, at most (default TEST.DETECTIONS_PER_IMAGE); "
        "counts are taken before this cap",
    )
    p.add_argument(
        "--tiling",
        default="auto",
        type=parse_tiling,
        help="'auto' (the default: one resized pass, kept where its products are near the "
        "training scale or larger; elsewhere a probe of the photo's centre, and tiles when its "
        "products are much smaller), 'off' (one resized pass), or WxH, a tile size in photo "
        "pixels (e.g. 1024x768)",
    )
    p.add_argument(
        "--train-product-side",
        type=float,
        help="median product side of the training images in input pixels, the training scale "
        "of --tiling auto (default: measured on the config's first DATASETS.TEST)",
    )
    p.add_argument(
        "--calibration-dataset",
        "--reference-dataset",
        dest="calibration_dataset",
        help="a registered labelled set (e.g. your own photos, registered with DATASETS.REGISTER "
        "in --opts) on which the count thresholds are calibrated (default: thresholds chosen on "
        "real shelf photos, see results/inference.md)",
    )
    p.add_argument(
        "--count-threshold",
        type=float,
        help=f"score threshold of the detection count (default {DEFAULT_COUNT_THRESHOLD}, or "
        "calibrated on --calibration-dataset)",
    )
    p.add_argument(
        "--peak-threshold",
        type=float,
        help=f"height of a Gaussian-map peak that counts as a product (default "
        f"{DEFAULT_PEAK_THRESHOLD}, or calibrated on --calibration-dataset)",
    )
    p.add_argument(
        "--rescore-alpha",
        type=float,
        help="multiply scores by the Gaussian map at the box centre to this power; 0 "
        "is off (default: 0.5 for models with a Gaussian branch, else 0; see "
        "results/inference.md)",
    )
    p.add_argument("--overlay", action="store_true", help="write overlays/<photo>.png")
    p.add_argument("--overlay-max-side", type=int, default=1024)
    p.add_argument(
        "--no-exif",
        action="store_true",
        help="ignore EXIF orientation: boxes on the pixels as stored",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config options as KEY VALUE pairs"
    )
    return p


def _device(spec: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", spec):
        raise argparse.ArgumentTypeError(f"device must be cpu, cuda or cuda:N, got {spec!r}")
    return spec


def setup_cfg(args):
    cfg = get_project_cfg(args.config_file, args.opts)
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if args.device:
        cfg.MODEL.DEVICE = args.device
    elif "MODEL.DEVICE" not in args.opts[::2]:
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.freeze()
    return cfg


def main(argv=None):
    """
    The command: parses ``argv`` (default sys.argv) and runs :func:`predict`. A missing input,
    an unregistered dataset or a folder holding another run end it with a one-line message.
    """
    args = get_parser().parse_args(argv)
    try:
        predict(args)
    except (FileNotFoundError, SettingsMismatchError) as e:
        raise SystemExit(f"gaussian-retina-predict: error: {e}") from None


def _registered_datasets_and_scale(cfg, args):
    """
    Registers the config's own datasets, checks that the datasets the run needs (the
    calibration set, and the one --tiling auto measures the training scale on) exist, and
    returns the training product side (None when --tiling auto does not need it).
    """
    scale_set = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
    need_scale = args.tiling == "auto" and args.train_product_side is None
    needed = [args.calibration_dataset] if args.calibration_dataset else []
    if need_scale:
        needed.append(scale_set)
    register_cfg_datasets(cfg)  # the user's labelled photos, named in DATASETS.REGISTER
    for name in needed:
        if not name or name not in DatasetCatalog.list():
            raise SystemExit(
                f"gaussian-retina-predict: error: dataset {name!r} is not registered (the "
                "training scale of --tiling auto is measured on DATASETS.TEST[0]: give "
                "--train-product-side, or --tiling off)"
            )
    if needed:
        configure_shelf_datasets(cfg, needed)  # cfg's bad-input policy and COCO cache
    train_side = args.train_product_side
    if need_scale:
        try:
            train_side = training_product_side(
                scale_set, (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            )
        except FileNotFoundError as e:
            # A fine-tuned model's config names the user's validation photos, which need not be
            # at hand where the model predicts.
            raise FileNotFoundError(
                f"{e}; --tiling auto measures the training scale on DATASETS.TEST[0] "
                f"({scale_set!r}): give its files, --train-product-side (an earlier run's "
                "summary.json records it) or --tiling off"
            ) from None
    return train_side


def _count_thresholds(predictor, cfg, args):
    """The count and peak thresholds: calibrated or the defaults, then the flags' values."""
    if args.calibration_dataset:
        calibration = calibrate_counts(
            predictor,
            args.calibration_dataset,
            cfg.INPUT.FORMAT,
            weights=cfg.MODEL.WEIGHTS,
            progress=not args.no_progress,
        )
    else:
        calibration = {
            "dataset": None,
            "count_threshold": DEFAULT_COUNT_THRESHOLD,
            "peak_threshold": DEFAULT_PEAK_THRESHOLD,
        }
    if args.count_threshold is not None:
        calibration["count_threshold"] = args.count_threshold
    if args.peak_threshold is not None:
        calibration["peak_threshold"] = args.peak_threshold
    return calibration


def predict(args):
    """Runs the command for parsed ``args``; returns the run's summary dict."""
    setup_logger(name="gaussian_retina")
    setup_logger(name="fvcore")
    cfg = setup_cfg(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("no weights: pass --weights or MODEL.WEIGHTS in --opts")
    files = find_images(args.input)
    names = output_names(files, input_root(args.input))

    train_side = _registered_datasets_and_scale(cfg, args)

    predictor = ShelfPredictor(
        cfg,
        tiling=args.tiling,
        train_product_side=train_side,
        batch_size=args.batch_size,
        rescore_alpha=args.rescore_alpha,
        **({"max_detections": args.max_det} if args.max_det else {}),
    )
    calibration = _count_thresholds(predictor, cfg, args)
    logger.info(f"Count thresholds: {calibration}")

    logger.info(f"{len(files)} photos -> {args.output}")
    summary = run_prediction(
        predictor,
        files,
        args.output,
        names=names,
        conf=args.conf,
        input_format=cfg.INPUT.FORMAT,
        apply_exif=not args.no_exif,
        count_calibration=calibration,
        template_size=cfg.MODEL.GAUSSIAN.TEMPLATE_SIZE,
        sigma=cfg.MODEL.GAUSSIAN.SIGMA,
        overlay=args.overlay,
        overlay_max_side=args.overlay_max_side,
        progress=not args.no_progress,
        run_info={
            "config_file": args.config_file,
            "weights": cfg.MODEL.WEIGHTS,
            "device": cfg.MODEL.DEVICE,
            "tiling": (
                args.tiling if isinstance(args.tiling, str) else "{1}x{0}".format(*args.tiling)
            ),
            "train_product_side": train_side,
            "max_detections": predictor.max_detections,
            "rescore_alpha": predictor.rescore_alpha,
            "apply_exif": not args.no_exif,
        },
    )
    for s in summary["skipped"]:
        logger.warning(f"skipped: {s['reason']}")  # the reason names the file
    logger.info(
        f"Done: {summary['photos_done']} photos, {summary['photos_skipped']} skipped, "
        f"{summary['products_total']} products, "
        f"{summary['seconds_per_photo']:.2f} s per photo; summary in {args.output}/summary.json"
    )
    return summary


if __name__ == "__main__":
    main()
