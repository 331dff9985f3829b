#!/usr/bin/env python3
"""
Training throughput, peak memory and inference speed of RetinaNet, GLN and GDN (ResNet-50), fp32
and AMP, on inputs synthesised to SKU-110K's statistics: what a run costs on your GPU.

Training steps go through the trainers DefaultTrainer runs (SimpleTrainer; AMPTrainer with
SOLVER.AMP.ENABLED), with the configs' optimizer, on one batch repeated (no data loading). Peak
memory is torch.cuda.max_memory_allocated over the timed steps. Also printed: the time of one
SKU-110K epoch (8,233 training images) and of the paper-scale schedule (configs/*_R50.yaml:
batch 16 x 10k iterations). The models are untrained (no download); see --help.

    # the GPU run (results/speed_and_memory.md): one command
    python tools/benchmark_gpu.py --output gpu_benchmark.md
    # smoke check on the CPU (AMP needs CUDA, so fp32 only)
    python tools/benchmark_gpu.py --device cpu --size 256 384 --batch 1 --iters 2 --boxes 150 \\
        --precision fp32 --infer-batch 1 --infer-iters 1
"""

import argparse
import gc
import os
import sys
from pathlib import Path

import torch
from detectron2.modeling import build_model
from tabulate import tabulate

from benchmark_harness import (
    benchmark_cfg,
    device_description,
    make_trainer,
    make_training_batch,
    tame_random_init,
    time_inference,
    time_training,
    append_report,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"RetinaNet": "retinanet_R50.yaml", "GLN": "gln_R50.yaml", "GDN": "gdn_R50.yaml"}
SKU110K_TRAIN_IMAGES = 8233
OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)


def _build(name, args):
    # lr 0: an untrained model at the configs' lr diverges within a few steps (and Detectron2's
    # trainers stop on a non-finite loss); a step costs the same at any lr.
    opts = ["SOLVER.BASE_LR", 0.0, *args.opts]
    cfg = benchmark_cfg(MODELS[name], depth=args.depth, device=args.device, opts=opts)
    torch.manual_seed(0)
    return cfg, tame_random_init(build_model(cfg))


def _release(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def benchmark_training(args):
    """(model, precision, batch, boxes) -> result dict, or a string saying why there is none."""
    results = {}
    for name in args.models:
        for precision in args.precision:
            for batch in args.batch:
                for boxes in args.boxes:
                    key = (name, precision, batch, boxes)
                    if precision == "amp" and not args.device.startswith("cuda"):
                        results[key] = "n/a (AMPTrainer needs CUDA)"
                        continue
                    cfg, model = _build(name, args)
                    data = make_training_batch(cfg, batch, boxes, args.size)
                    trainer = make_trainer(cfg, model, data, amp=precision == "amp")
                    try:
                        r = time_training(
                            trainer, iters=args.iters, warmup=args.warmup, device=args.device
                        )
                        r["images_per_s"] = batch / r["seconds_per_iter"]
                        results[key] = r
                    except OOM_ERRORS as e:
                        results[key] = f"out of memory ({type(e).__name__})"
                    del trainer, model, data
                    _release(args.device)
                    print(key, results[key], flush=True)
    return results


def benchmark_inference(args):
    """(model, precision, batch) -> result dict or reason."""
    results = {}
    for name in args.models:
        cfg, model = _build(name, args)
        for precision in args.precision:
            for batch in args.infer_batch:
                key = (name, precision, batch)
                if precision == "amp" and not args.device.startswith("cuda"):
                    results[key] = "n/a (CPU)"
                    continue
                inputs = [
                    {k: x[k] for k in ("image", "height", "width")}
                    for x in make_training_batch(cfg, batch, 0, args.size)
                ]
                try:
                    r = time_inference(
                        model,
                        inputs,
                        iters=args.infer_iters,
                        warmup=args.warmup,
                        device=args.device,
                        amp=precision == "amp",
                    )
                    r["images_per_s"] = batch / r["seconds"]
                    results[key] = r
                except OOM_ERRORS as e:
                    results[key] = f"out of memory ({type(e).__name__})"
                print(key, results[key], flush=True)
        del model
        _release(args.device)
    return results


def _cell(r, field, fmt="{:.2f}"):
    if not isinstance(r, dict):
        return r
    return "-" if r[field] != r[field] else fmt.format(r[field])  # NaN: not measured here


def _ratio(r, other, field):
    """r[field] / other[field] as text, or "" when either case failed."""
    ok = isinstance(r, dict) and isinstance(other, dict)
    return f"{r[field] / other[field]:.2f}" if ok else ""


def _training_row(key, r, results):
    """One case's row: throughput and memory, as such and against RetinaNet and float32."""
    name, precision, batch, boxes = key
    base = results.get(("RetinaNet", precision, batch, boxes))
    fp32 = results.get((name, "fp32", batch, boxes))
    return [
        name,
        precision,
        batch,
        boxes,
        _cell(r, "images_per_s"),
        _ratio(r, base, "images_per_s"),
        _ratio(r, fp32, "images_per_s"),
        _cell(r, "peak_mb", "{:.0f}"),
        _ratio(r, base, "peak_mb"),
        _cell(r, "reserved_mb", "{:.0f}"),
        f"{r['losses']['total_loss']:.3f}" if isinstance(r, dict) else "",
    ]


def training_tables(args, results):
    rows, cost_rows = [], []
    for (name, precision, batch, boxes), r in results.items():
        rows.append(_training_row((name, precision, batch, boxes), r, results))
        if isinstance(r, dict) and boxes == min(args.boxes):
            epoch_h = SKU110K_TRAIN_IMAGES / r["images_per_s"] / 3600
            schedule_h = 16 * 10000 / r["images_per_s"] / 3600
            cost_rows.append([name, precision, batch, boxes, f"{epoch_h:.2f}", f"{schedule_h:.1f}"])
    headers = [
        "model",
        "precision",
        "batch",
        "boxes / image",
        "images/s",
        "/ RetinaNet",
        "/ fp32",
        "peak allocated (MB)",
        "/ RetinaNet",
        "peak reserved (MB)",
        "last total loss",
    ]
    lines = [
        "### Training",
        "",
        f"{args.size[0]}x{args.size[1]}, ResNet-{args.depth}, untrained, lr 0; {args.warmup} warm-up "
        f"then {args.iters} timed steps (forward with losses, backward, optimizer step) per case, "
        "one fresh model per case. "
        "Peak memory over the timed steps (GPU: tensors allocated / caching allocator's reserve; "
        "CPU: the process's peak RSS).",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
        "### What a run costs",
        "",
        f"One SKU-110K epoch ({SKU110K_TRAIN_IMAGES} images) and the paper-scale schedule "
        "(configs/*_R50.yaml: 160,000 images, batch 16 x 10k iterations) at the throughput "
        "measured at each batch size, on one device, data loading not counted.",
        "",
        tabulate(
            cost_rows,
            headers=[
                "model",
                "precision",
                "batch",
                "boxes / image",
                "epoch (h)",
                "10k x 16 schedule (h)",
            ],
            tablefmt="pipe",
            disable_numparse=True,
        ),
        "",
    ]
    return lines


def inference_table(args, results):
    rows = []
    for (name, precision, batch), r in results.items():
        base = results.get(("RetinaNet", precision, batch))
        ok = isinstance(r, dict)
        rows.append(
            [
                name,
                precision,
                batch,
                _cell(r, "seconds", "{:.4f}") if not ok else f"{1000 * r['seconds']:.1f}",
                _cell(r, "images_per_s"),
                f"{r['seconds'] / base['seconds']:.2f}" if ok and isinstance(base, dict) else "",
                _cell(r, "peak_mb", "{:.0f}"),
            ]
        )
    return [
        "### Inference",
        "",
        f"{args.size[0]}x{args.size[1]}, median of {args.infer_iters} calls after {args.warmup} "
        "warm-up, post-processing included (untrained models: the number of candidates, hence NMS "
        "time, is not that of a trained model). AMP: the forward pass under float16 autocast.",
        "",
        tabulate(
            rows,
            headers=[
                "model",
                "precision",
                "batch",
                "ms per batch",
                "images/s",
                "time / RetinaNet",
                "peak allocated (MB)",
            ],
            tablefmt="pipe",
            disable_numparse=True,
        ),
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16], help="training batches")
    parser.add_argument(
        "--boxes", type=int, nargs="+", default=[150, 300], help="objects per image"
    )
    parser.add_argument("--precision", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp"])
    parser.add_argument("--iters", type=int, default=10, help="timed training steps per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--infer-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--infer-iters", type=int, default=20)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--output", help="also append the report (Markdown) to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available: run on a GPU, or pass --device cpu for a smoke check")

    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    lines = [
        f"## {device_description(args.device)}",
        "",
        f"`{command}`",
        "",
        f"torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s).",
        "",
    ]
    print("\n".join(lines), flush=True)
    if not args.skip_training:
        lines += training_tables(args, benchmark_training(args))
    if not args.skip_inference:
        lines += inference_table(args, benchmark_inference(args))
    print("\n".join(lines))
    append_report(args.output, lines)


if __name__ == "__main__":
    main()
