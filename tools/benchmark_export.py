#!/usr/bin/env python3
"""
CPU latency of the exported model against PyTorch: one checkpoint exported to ONNX (run by
onnxruntime) and to TorchScript, then, on every photo of a folder resized to the config's test
size, the same input through PyTorch, TorchScript and onnxruntime, interleaved photo by photo so
that load from other processes hits the three alike. Also checks the exports' detections against
PyTorch's on every photo (trained weights) and notes the files' sizes.

Latency is from the resized (3, h, w) float32 tensor to boxes, scores and classes as numpy arrays
(the exported graph's whole span: normalisation to NMS); reading and resizing the photo are not
timed. Per image: the median (and 10th-90th percentiles) over --runs passes over all photos.

    python tools/benchmark_export.py --config-file configs/synthetic/gln_R18.yaml \\
        --weights output/reproduction/gln_R18/seed0/model_final.pth \\
        --images ../shared/data/tobacco_shelves/images --threads 1 2 --runs 5 \\
        --output output/export_benchmark.md
"""

import os
import warnings

# One thread unless --threads says more; set before numpy / torch start their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# torch.jit announces its deprecation at every load and save.
warnings.filterwarnings("ignore", category=FutureWarning)

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from gaussian_retina.data.image_reader import read_shelf_image  # noqa: E402
from gaussian_retina.engine import get_project_cfg  # noqa: E402
from benchmark_harness import append_report, device_description, load_average  # noqa: E402
from gaussian_retina.inference import (  # noqa: E402
    compare_detections, export_onnx, export_torchscript, load_onnx, resize_for_test, run_onnx,
    run_pytorch, run_torchscript,
)
from gaussian_retina.inference.export import ONNX_OPSET  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(ROOT / "configs/synthetic/gln_R18.yaml"))
    parser.add_argument("--weights",
                        default=str(ROOT / "output/reproduction/gln_R18/seed0/model_final.pth"))
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/tobacco_shelves/images"))
    parser.add_argument("--runs", type=int, default=5, help="timed passes over all the photos")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--output", default="", help="Markdown file to append the report to")
    parser.add_argument("--rescore-alpha", type=float,
                        help="the map's power in the exported rescoring (default: the predict "
                        "command's; 0: RetinaNet's inference alone)")
    return parser.parse_args()


def load_model_and_images(args):
    """The checkpoint on the CPU, and every photo of --images resized to the config's test size."""
    cfg = get_project_cfg(args.config_file)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(args.weights)
    photos = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    images = [resize_for_test(read_shelf_image({"file_name": str(p)}, cfg.INPUT.FORMAT),
                              cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) for p in photos]
    return cfg, model, photos, images


def export_both(model, image, folder, alpha):
    """ONNX and TorchScript files traced on ``image``, and the seconds each export took."""
    paths, seconds = [], []
    for export, name in ((export_onnx, "model.onnx"), (export_torchscript, "model.ts")):
        start = time.perf_counter()
        paths.append(export(model, image, os.path.join(folder, name), rescore_alpha=alpha))
        seconds.append(time.perf_counter() - start)
    return paths, seconds


def parity_lines(model, runners, images, alpha):
    """Each export's detections against PyTorch's on every photo, with trained weights."""
    lines = ["", "| export | detections (PyTorch) | photos not matched 1:1 | min IoU "
             "| max score diff |", "|---|---|---|---|---|"]
    for name, run in runners.items():
        stats = [compare_detections(run_pytorch(model, x, alpha), run(x)) for x in images]
        counts = [s["count"] for s in stats]
        lines.append(
            f"| {name} | {sum(counts)} ({min(counts)}-{max(counts)} per photo) | "
            f"{sum(s['count'] != s['other_count'] or not s['one_to_one'] for s in stats)} | "
            f"{min(s['min_iou'] for s in stats):.6f} | "
            f"{max(s['max_score_diff'] for s in stats):.1e} |"
        )
    return lines


def latency_lines(threads, runners, images, runs):
    """Per-image latency of each runtime, interleaved photo by photo, against PyTorch's."""
    # Two warm-up passes: TorchScript's profiling executor optimises a graph for an input
    # shape on its second call, and every runtime allocates its buffers on the first.
    for _ in range(2):
        for x in images:
            for run in runners.values():
                run(x)
    load_before = os.getloadavg()[0]
    times = {name: [] for name in runners}
    for _ in range(runs):
        for x in images:
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()[0]
    base = np.median(times["PyTorch (eager)"])
    lines = []
    for name, t in times.items():
        t = np.asarray(t) * 1000
        lines.append(
            f"| {threads} | {name} | {np.median(t):.1f} | "
            f"{np.percentile(t, 10):.1f}-{np.percentile(t, 90):.1f} | "
            f"{base * 1000 / np.median(t):.2f}x | {load_before:.2f}, {load_after:.2f} |"
        )
    return lines


def main():
    args = parse_args()
    cfg, model, photos, images = load_model_and_images(args)
    sizes = sorted({tuple(x.shape[1:]) for x in images})
    print(f"{len(images)} photos, {len(sizes)} input sizes from {min(sizes)} to {max(sizes)}")
    alpha = args.rescore_alpha
    lines = [
        "",
        f"## {Path(args.config_file).name}, {datetime.date.today()}",
        "",
        f"`{' '.join(['python tools/benchmark_export.py'] + sys.argv[1:])}`",
        "",
        f"- weights: `{args.weights}`",
        f"- machine: {device_description()}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}",
        f"- input: {len(images)} photos of `{args.images}` resized to the test size "
        f"(short side {cfg.INPUT.MIN_SIZE_TEST}, long side at most {cfg.INPUT.MAX_SIZE_TEST}): "
        f"{len(sizes)} different (h, w), {min(sizes)} to {max(sizes)}",
        f"- load (`uptime`) at the start: {load_average()}; torch and onnxruntime threads: "
        f"{', '.join(map(str, args.threads))}",
    ]
    with tempfile.TemporaryDirectory() as d:
        (onnx_path, ts_path), (onnx_seconds, ts_seconds) = export_both(model, images[0], d, alpha)
        lines.append(
            f"- files: ONNX (opset {ONNX_OPSET}, TorchScript-based exporter) "
            f"{os.path.getsize(onnx_path) / 2**20:.1f} MiB, exported in {onnx_seconds:.1f} s; "
            f"TorchScript (traced) {os.path.getsize(ts_path) / 2**20:.1f} MiB, "
            f"in {ts_seconds:.1f} s; traced on `{photos[0].name}` {tuple(images[0].shape[1:])}"
        )
        scripted = torch.jit.load(ts_path)
        sessions = {t: load_onnx(onnx_path, num_threads=t) for t in args.threads}

        def runners(threads):
            return {
                "PyTorch (eager)": lambda x: run_pytorch(model, x, alpha),
                "TorchScript": lambda x: run_torchscript(scripted, x),
                "ONNX Runtime": lambda x: run_onnx(sessions[threads], x),
            }

        torch.set_num_threads(max(args.threads))
        exports = {k: v for k, v in runners(max(args.threads)).items() if k != "PyTorch (eager)"}
        lines += parity_lines(model, exports, images, alpha)
        print("\n".join(lines))
        lines += ["", "| threads | runtime | median ms / image | p10-p90 ms | speed-up "
                  "| 1-min load before, after |", "|---|---|---|---|---|---|"]
        for threads in args.threads:
            torch.set_num_threads(threads)
            lines += latency_lines(threads, runners(threads), images, args.runs)
            print("\n".join(lines[-3:]))
    lines.append(
        f"\nLoad (`uptime`) at the end: {load_average()}. {args.runs} timed passes over the "
        f"{len(images)} photos per thread count ({args.runs * len(images)} timings per runtime), "
        "after 2 warm-up passes."
    )
    print("\n".join(lines))
    append_report(args.output, lines)


if __name__ == "__main__":
    main()
