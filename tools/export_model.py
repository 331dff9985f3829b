#!/usr/bin/env python3
"""
Export a RetinaNet-family model (GaussianRetinaNet or RetinaNet config) to ONNX or TorchScript.

The file holds the predict command's single pass for one image, NMS and the Gaussian map's
rescoring included: input ``image`` (3, H, W) float32 in cfg.INPUT.FORMAT, resized to the test
size; outputs ``boxes`` (N, 4) XYXY in the input's pixels, ``scores`` (N,), ``classes`` (N,).
See gaussian_retina/inference/export.py.

    python tools/export_model.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/reproduction/gln_R18/seed0/model_final.pth --format onnx \\
        --sample-image ../shared/data/tobacco_shelves/images/C1_P01_N1_S2_2.JPG \\
        --output exported/gln_R18.onnx
"""

import argparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.engine import get_project_cfg
from gaussian_retina.inference import compare_detections, export_onnx, export_torchscript
from gaussian_retina.inference import resize_for_test, run_onnx, run_pytorch, run_torchscript
from gaussian_retina.inference.export import ONNX_OPSET


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--weights", default=None, help="checkpoint (default: MODEL.WEIGHTS)")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write (.onnx / .ts)")
    parser.add_argument("--sample-image", required=True,
                        help="photo to trace on, resized to the test size")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (>= 11)")
    parser.add_argument("--rescore-alpha", type=float,
                        help="power of the map in the rescoring, as the predict command's "
                        "(default: its default; 0 exports RetinaNet's inference alone)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logger = setup_logger(name="gaussian_retina")
    cfg = get_project_cfg(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"  # the trace records the device; exported files are for CPU here
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(args.weights if args.weights is not None
                                      else cfg.MODEL.WEIGHTS)

    photo = read_shelf_image({"file_name": args.sample_image}, cfg.INPUT.FORMAT)
    image = resize_for_test(photo, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    alpha = args.rescore_alpha
    if args.format == "onnx":
        path = export_onnx(model, image, args.output, opset=args.opset, rescore_alpha=alpha)
        exported = run_onnx(path, image)
    else:
        path = export_torchscript(model, image, args.output, rescore_alpha=alpha)
        exported = run_torchscript(torch.jit.load(path), image)
    parity = compare_detections(run_pytorch(model, image, alpha), exported)
    logger.info(f"Wrote {path}; input {tuple(image.shape)}; against PyTorch on the sample: "
                f"{parity}")
    return parity


if __name__ == "__main__":
    main()
