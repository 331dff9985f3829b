#!/usr/bin/env python3
"""
Figures for gaussian-retina, saved as PNG:

  gt       ground-truth boxes (blue) and the ground-truth Gaussian map over a real image;
  predict  one model: predictions (red) and ground truth (blue) as in the paper's Fig. 1, then the
           predicted and the ground-truth Gaussian maps over the image;
  compare  several models side by side on the same image (e.g. RetinaNet and GLN).

An image comes from a registered dataset (--dataset NAME --index I) or from a file, with its boxes
optionally read from a CSV in the SKU-110K layout (image_name,x1,y1,x2,y2,...; header or not):

    python tools/visualize.py gt --image ../shared/data/tobacco_shelves/images/C1_P01_N1_S2_2.JPG \\
        --annotations ../shared/data/tobacco_shelves/annotations.csv --output gt.png
    python tools/visualize.py predict --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/synthetic/gln_R18/model_final.pth --dataset synthetic_shelves_val \\
        --index 0 --output gln.png
    python tools/visualize.py compare --config-file configs/synthetic/retinanet_R18.yaml \\
        configs/synthetic/gln_R18.yaml --weights retinanet.pth gln.pth --names RetinaNet GLN \\
        --dataset synthetic_shelves_val --index 0 --output compare.png
"""

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.engine import DefaultPredictor
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger

from gaussian_retina.data import build_gaussian_renderer
from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.engine import get_project_cfg
from gaussian_retina.inference import ShelfVisualizer, draw_overlay, save_png
from gaussian_retina.inference.overlay import RED
from gaussian_retina.shelves import configure_shelf_datasets
from gaussian_retina.shelves.retail_csv import read_box_csv

logger = logging.getLogger("gaussian_retina.visualize")

BLUE = (0.0, 0.35, 1.0)  # ground truth; predictions in overlay's RED, as in the paper's Fig. 1


def draw_boxes(image_rgb, gt_boxes=None, pred_boxes=None, line_width=1.5):
    """
    (H, W, 3) uint8 RGB with ground truth (N, 4 XYXY, or None) in blue under predictions in red,
    drawn with the predict command's thin opaque outlines.
    """
    vis = ShelfVisualizer(image_rgb, line_width=line_width)
    for boxes, color in ((gt_boxes, BLUE), (pred_boxes, RED)):
        if boxes is not None and len(boxes):
            vis.overlay_instances(boxes=np.asarray(boxes), assigned_colors=[color] * len(boxes))
    return vis.output.get_image()


def overlay_map(image_rgb, heatmap):
    """
    The predict command's map panel, (H, W, 3) uint8, for an (h, w) map covering the whole
    image (any stride; 1 = an object's centre).
    """
    h, w = image_rgb.shape[:2]
    panels = draw_overlay(image_rgb, np.zeros((0, 4)), heatmap, max_side=max(h, w))
    return np.ascontiguousarray(panels[:, -w:])


def compose(panels, gap=8, title_height=30):
    """(title, (H, W, 3) uint8 RGB) panels of one height side by side, each under its title."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    out = []
    for title, img in panels:
        bar = np.full((title_height, img.shape[1], 3), 255, np.uint8)
        # Shrink the title to the panel's width rather than cut it.
        width = cv2.getTextSize(title, font, 1.0, 1)[0][0]
        scale = min(0.65, (img.shape[1] - 12) / max(width, 1))
        cv2.putText(bar, title, (6, title_height - 9), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(np.vstack([bar, img]))
        out.append(np.full((out[-1].shape[0], gap, 3), 255, np.uint8))
    return np.hstack(out[:-1])


def read_csv_boxes(csv_file, image_name):
    """(N, 4) float32 XYXY boxes of ``image_name`` in a SKU-110K or benchmark CSV."""
    table = read_box_csv(csv_file)
    index = table.image_names.index(image_name) if image_name in table.image_names else -1
    if index < 0:
        logger.warning(f"{csv_file} has no boxes for {image_name}")
    return table.boxes[table.box_image == index].astype(np.float32).reshape(-1, 4)


def load_example(args, cfg):
    """A name for the image, the (H, W, 3) uint8 BGR image and its (N, 4) XYXY boxes or None."""
    if args.dataset:
        configure_shelf_datasets(cfg, [args.dataset])
        records = DatasetCatalog.get(args.dataset)
        if not 0 <= args.index < len(records):
            raise IndexError(f"--index {args.index}: {args.dataset} has {len(records)} images")
        record = records[args.index]
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                 for a in record.get("annotations", [])]
        gt = np.asarray(boxes, np.float32).reshape(-1, 4)
    else:
        # The retail CSV layouts draw boxes on the pixels as stored (see image_reader).
        record = {"file_name": args.image, "apply_exif": not args.annotations}
        gt = read_csv_boxes(args.annotations, Path(args.image).name) if args.annotations else None
    image = read_shelf_image(record, "BGR")
    return Path(record["file_name"]).stem, image, gt


def build_predictor(config_file, weights, opts=()):
    cfg = get_project_cfg(config_file, opts)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.GAUSSIAN.RETURN_MAP_AT_TEST = True  # ignored by models without the branch
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg, DefaultPredictor(cfg)


def predict(predictor, image_bgr, score_thresh):
    """
    (N, 4) XYXY boxes scored >= score_thresh in the image's pixels, and the predicted (h, w) map
    over the whole image (None for a model without the branch).
    """
    outputs = predictor(image_bgr)
    instances = outputs["instances"].to("cpu")
    instances = instances[instances.scores >= score_thresh]
    pred_map = outputs.get("gaussian_map")
    if pred_map is not None:
        pred_map = pred_map[0].float().cpu().numpy()
    return instances.pred_boxes.tensor.numpy(), pred_map


def gt_map(cfg, gt_boxes, image_size):
    """
    The training target for this image: rendered at the size the network sees it
    (INPUT.MIN/MAX_SIZE_TEST), as the mapper does, so it lines up with the predicted map.
    """
    h, w = image_size
    new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, cfg.INPUT.MIN_SIZE_TEST,
                                                       cfg.INPUT.MAX_SIZE_TEST)
    renderer = build_gaussian_renderer(cfg)
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], np.float32)
    return renderer(gt_boxes * scale, (new_h, new_w))


def resize_for_figure(image_bgr, boxes_list, height):
    """Image to RGB at ``height`` rows; boxes scaled alike (None stays None)."""
    scale = height / image_bgr.shape[0]
    size = (round(image_bgr.shape[1] * scale), height)
    rgb = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)[..., ::-1]
    return np.ascontiguousarray(rgb), [None if b is None else b * scale for b in boxes_list]


def figure_gt(args):
    cfg = get_project_cfg(args.config_file[0] if args.config_file else None)
    name, image, gt = load_example(args, cfg)
    if gt is None:
        raise ValueError("gt mode needs ground truth: --dataset, or --image with --annotations")
    target = gt_map(cfg, gt, image.shape[:2])
    rgb, (boxes,) = resize_for_figure(image, [gt], args.height)
    return compose([(f"{name}: {len(gt)} ground-truth boxes",
                     draw_boxes(rgb, gt_boxes=boxes, line_width=args.line_width)),
                    ("ground-truth Gaussian map", overlay_map(rgb, target))])


def figure_predict(args):
    cfg, predictor = build_predictor(args.config_file[0], args.weights[0], args.opts)
    name, image, gt = load_example(args, cfg)
    pred, pred_map = predict(predictor, image, args.score_thresh)
    rgb, (boxes, gt_small) = resize_for_figure(image, [pred, gt], args.height)
    title = f"{args.names[0] if args.names else name}: {len(pred)} predictions (red)"
    title += ", ground truth (blue)" if gt is not None else ""
    panels = [(title, draw_boxes(rgb, gt_small, boxes, args.line_width))]
    if pred_map is not None:
        panels.append(("predicted Gaussian map", overlay_map(rgb, pred_map)))
    if gt is not None:
        target = gt_map(cfg, gt, image.shape[:2])
        panels.append(("ground-truth Gaussian map", overlay_map(rgb, target)))
    return compose(panels)


def figure_compare(args):
    names = args.names or [Path(c).stem for c in args.config_file]
    if not len(names) == len(args.config_file) == len(args.weights):
        raise ValueError("compare needs as many --weights (and --names) as --config-file")
    name, image, gt = load_example(args, get_project_cfg(args.config_file[0], args.opts))
    panels = []
    for model_name, config_file, weights in zip(names, args.config_file, args.weights):
        _, predictor = build_predictor(config_file, weights, args.opts)
        pred, _ = predict(predictor, image, args.score_thresh)
        rgb, (boxes, gt_small) = resize_for_figure(image, [pred, gt], args.height)
        panels.append((f"{model_name}: {len(pred)} detections >= {args.score_thresh}",
                       draw_boxes(rgb, gt_small, boxes, args.line_width)))
    return compose(panels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["gt", "predict", "compare"])
    parser.add_argument("--config-file", nargs="+", default=[], help="one per model")
    parser.add_argument("--weights", nargs="+", default=[], help="one per --config-file")
    parser.add_argument("--names", nargs="+", help="panel titles, one per model")
    parser.add_argument("--dataset", help="a registered dataset to take the image from")
    parser.add_argument("--index", type=int, default=0, help="image index in --dataset")
    parser.add_argument("--image", help="an image file (instead of --dataset)")
    parser.add_argument("--annotations", help="CSV with --image's boxes (SKU-110K layout)")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="predictions shown")
    parser.add_argument("--height", type=int, default=600, help="panel height in pixels")
    parser.add_argument("--line-width", type=float, default=1.5, help="box outline, pixels")
    parser.add_argument("--output", required=True, help="PNG file")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, KEY VALUE ... (last on the command line)")
    args = parser.parse_args()
    if bool(args.dataset) == bool(args.image):
        parser.error("give exactly one of --dataset and --image")
    if args.mode != "gt" and not (args.config_file and args.weights):
        parser.error(f"{args.mode} needs --config-file and --weights")
    setup_logger(name="gaussian_retina")
    figure = {"gt": figure_gt, "predict": figure_predict, "compare": figure_compare}[args.mode]
    image = figure(args)
    size = save_png(image, args.output)
    logger.info(f"Wrote {args.output} ({image.shape[1]}x{image.shape[0]}, {size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
