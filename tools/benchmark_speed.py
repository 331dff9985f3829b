#!/usr/bin/env python3
"""
Speed and cost of GLN and GDN against RetinaNet, measured side by side in one run:

1. training-step time (forward, backward, SGD step) and inference time on the same input,
   as ratios to RetinaNet;
2. parameters and FLOPs (Detectron2's flop_count_operators of one inference);
3. Gaussian-map rendering time against the number of boxes;
4. data-loader throughput (the mapper, per worker) with and without the heatmap targets.

The models are untrained (same seeds; GLN and GDN get RetinaNet's weights for the parts they
share, so all three post-process the same detections). Timings are medians over interleaved
iterations, so load from other processes hits the three models alike, and are given as CPU time
(the cost) and wall time.

    python tools/benchmark_speed.py --depth 50 --size 512 853 --output speed_benchmark.md
    python tools/benchmark_speed.py --depth 50 --size 800 1333 --iters 3 --skip-render --skip-loader
"""

import os
import warnings

# Deprecation chatter from torch.jit and meshgrid would drown the report.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="torch.meshgrid")
# One core for stable numbers; set before numpy / torch start their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from detectron2.utils.analysis import flop_count_operators  # noqa: E402
from tabulate import tabulate  # noqa: E402
from torch import nn  # noqa: E402

from gaussian_retina import (  # noqa: E402
    GaussianDatasetMapper,
    GaussianMapRenderer,
    ShelfDatasetMapper,
)
from gaussian_retina.data import build_gaussian_renderer  # noqa: E402
from gaussian_retina.shelves import (  # noqa: E402
    configure_shelf_datasets,
    register_retail_dataset,
)
from benchmark_harness import (  # noqa: E402
    append_report,
    benchmark_cfg,
    sku110k_boxes,
    synthetic_training_input,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_LOADER_DATASET = "speed_benchmark_shelves"
MODELS = {"RetinaNet": "retinanet", "GDN": "gdn", "GLN": "gln"}
TARGETS = {"inference": 1.02, "train GLN": 1.15, "train GDN": 1.35, "render 150 boxes (ms)": 3.0}


def make_input(cfg, args):
    """One image as the mapper would give it, with its boxes and Gaussian target."""
    height, width = args.size
    boxes = sku110k_boxes(np.random.default_rng(0), args.boxes, height, width)
    renderer = build_gaussian_renderer(cfg)
    return synthetic_training_input(boxes, height, width, renderer=renderer)


def gflops(model, image, with_branch):
    """
    Detectron2's operator FLOP count of one inference, the Gaussian branch included when
    ``with_branch`` (it runs only in training; ``return_gaussian_map`` runs it at test time).
    """
    if hasattr(model, "return_gaussian_map"):
        model.return_gaussian_map = with_branch
    try:
        return sum(flop_count_operators(model, [{"image": image}]).values())
    finally:
        if hasattr(model, "return_gaussian_map"):
            model.return_gaussian_map = False


def emit(lines, block):
    """Appends a report block (list of lines) and prints it at once."""
    lines += block
    print("\n".join(block), flush=True)


def time_interleaved(steps, warmup, iters):
    """
    steps: name -> zero-argument callable; they take turns within every iteration.

    Returns:
        name -> (median CPU seconds, median wall seconds). The CPU time of this (one-thread)
        process is what the step costs; wall time also counts the waits while other processes
        hold the cores.
    """
    cpu = {name: [] for name in steps}
    wall = {name: [] for name in steps}
    for i in range(warmup + iters):
        for name, step in steps.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            step()
            if i >= warmup:
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start_wall)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in steps}


def build_models(args):
    """
    RetinaNet, GDN and GLN, untrained, GDN and GLN with RetinaNet's weights for the parts they
    share (so all three post-process the same detections); and GLN's training input.
    """
    models, cfgs = {}, {}
    for name, arch in MODELS.items():
        cfgs[name] = benchmark_cfg(f"{arch}_R50.yaml", depth=args.depth, opts=args.opts)
        torch.manual_seed(0)
        models[name] = build_model(cfgs[name])
    shared = models["RetinaNet"].state_dict()
    for name in ("GDN", "GLN"):
        missing, unexpected = models[name].load_state_dict(shared, strict=False)
        assert not unexpected, unexpected
        assert all(k.startswith("gaussian_branch.") for k in missing), missing
    return models, make_input(cfgs["GLN"], args)


def benchmark_models(args, lines):
    models, inp = build_models(args)
    flops_table(models, inp, args, lines)
    timing_table(models, inp, args, lines)


def flops_table(models, inp, args, lines):
    rows = []
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        branch = sum(
            p.numel() for p in getattr(model, "gaussian_branch", nn.Identity()).parameters()
        )
        model.eval()
        rows.append(
            [
                name,
                params / 1e6,
                branch / 1e6,
                gflops(model, inp["image"], False),
                gflops(model, inp["image"], True),
            ]
        )
    base = rows[0]
    for row in rows:
        row += [row[1] / base[1], row[4] / base[4]]
    emit(
        lines,
        [
            "### Parameters and FLOPs",
            "",
            f"Detectron2's flop_count_operators of one inference on one {args.size[0]}x"
            f"{args.size[1]} input, with the Gaussian branch for the training column; ops fvcore "
            "cannot count (NMS, sorting) and losses are left out, and one fused multiply-add "
            "counts as one flop.",
            "",
            tabulate(
                rows,
                headers=[
                    "model",
                    "params (M)",
                    "branch params (M)",
                    "inference GFLOPs",
                    "training-forward GFLOPs",
                    "params / RetinaNet",
                    "training GFLOPs / RetinaNet",
                ],
                tablefmt="pipe",
                floatfmt=".3f",
            ),
            "",
        ],
    )


def timing_table(models, inp, args, lines):
    def train_step(model, optimizer):
        def step():
            optimizer.zero_grad(set_to_none=True)
            losses = model([inp])
            sum(losses.values()).backward()
            optimizer.step()

        return step

    def infer(model):
        def step():
            with torch.no_grad():
                model([inp])

        return step

    for model in models.values():
        model.train()
    optimizers = {
        n: torch.optim.SGD(m.parameters(), lr=1e-5, momentum=0.9) for n, m in models.items()
    }
    with EventStorage(0):
        train = time_interleaved(
            {n: train_step(m, optimizers[n]) for n, m in models.items()}, args.warmup, args.iters
        )
    for model in models.values():
        model.eval()
    detections = {n: len(m([inp])[0]["instances"]) for n, m in models.items()}
    test = time_interleaved({n: infer(m) for n, m in models.items()}, args.warmup, args.infer_iters)

    def cells(times, name):
        (cpu, wall), (base_cpu, base_wall) = times[name], times["RetinaNet"]
        return [cpu, cpu / base_cpu, wall, wall / base_wall]

    rows = [[n] + cells(train, n) + cells(test, n) + [detections[n]] for n in models]
    emit(
        lines,
        [
            "### Training-step and inference time",
            "",
            f"One {args.size[0]}x{args.size[1]} image with {args.boxes} boxes, "
            f"ResNet-{args.depth}, batch 1, {torch.get_num_threads()} thread(s); medians of "
            f"{args.iters} training steps (forward with losses, backward, SGD step) and "
            f"{args.infer_iters} inferences, the models taking turns, after {args.warmup} "
            "warm-up. CPU = this process's CPU time, the cost; wall = elapsed time, which also "
            "counts waiting for cores held by other processes. Ratios are to RetinaNet.",
            "",
            tabulate(
                rows,
                headers=[
                    "model",
                    "train CPU (s)",
                    "ratio",
                    "train wall (s)",
                    "ratio",
                    "inference CPU (s)",
                    "ratio",
                    "inference wall (s)",
                    "ratio",
                    "detections",
                ],
                tablefmt="pipe",
                floatfmt=".3f",
            ),
            "",
            "Targets: inference <= {inference}; training GLN <= {train GLN}, "
            "GDN <= {train GDN} (ratios to RetinaNet).".format(**TARGETS),
            "",
        ],
    )


def benchmark_render(args, lines):
    height, width = 800, 1333
    renderer = GaussianMapRenderer()  # the paper's template
    rng = np.random.default_rng(0)
    rows = []
    for num in args.render_boxes:
        boxes = sku110k_boxes(rng, num, height, width)
        renderer(boxes, (height, width))  # warm-up
        t = []
        for _ in range(args.render_repeats):
            start = time.process_time()
            renderer(boxes, (height, width))
            t.append(time.process_time() - start)
        rows.append([num, 1000 * statistics.median(t), 1000 * min(t)])
    emit(
        lines,
        [
            "### Gaussian-map rendering",
            "",
            f"GaussianMapRenderer (stride 2, template 120, sigma 40, sum) for an {height}x{width} "
            f"image, one thread; rows of touching products as on SKU-110K's photos; "
            f"{args.render_repeats} repeats. "
            f"Target: 150 boxes <= {TARGETS['render 150 boxes (ms)']} ms.",
            "",
            tabulate(
                rows,
                headers=["boxes", "median CPU (ms)", "best CPU (ms)"],
                tablefmt="pipe",
                floatfmt=".2f",
            ),
            "",
        ],
    )


def benchmark_loader(args, lines):
    if args.loader_dataset is None:
        image_root, annotations = args.loader_data
        if not os.path.isfile(annotations):
            emit(lines, ["### Data loader", "", f"Skipped: {annotations} not found.", ""])
            return
        args.loader_dataset = _LOADER_DATASET
        register_retail_dataset(args.loader_dataset, image_root, annotations)
    cfg = benchmark_cfg("gln_R50.yaml", depth=args.depth, opts=args.opts)
    configure_shelf_datasets(cfg, [args.loader_dataset])
    records = DatasetCatalog.get(args.loader_dataset)[: args.loader_images]
    records = [records[i % len(records)] for i in range(args.loader_images)]
    without = ShelfDatasetMapper(cfg, is_train=True, mosaic_pool=records)
    with_maps = GaussianDatasetMapper(cfg, is_train=True, mosaic_pool=records)
    with_maps.gaussian_renderer = render = Timed(with_maps.gaussian_renderer)
    mappers = {
        "without heatmaps (ShelfDatasetMapper)": without,
        "with heatmaps (GaussianDatasetMapper)": with_maps,
    }
    times = {name: [] for name in mappers}
    sizes = []
    for i, record in enumerate(records):
        # Alternate which mapper goes first so the file cache favours neither.
        for name in list(mappers)[:: 1 if i % 2 else -1]:
            start = time.perf_counter()
            out = mappers[name](record)
            times[name].append(time.perf_counter() - start)
        sizes.append(tuple(out["image"].shape[-2:]))
    base = sum(times[list(mappers)[0]])
    rows = [
        [name, len(t) / sum(t), 1000 * sum(t) / len(t), sum(t) / base] for name, t in times.items()
    ]
    mean_size = np.mean(sizes, axis=0)
    boxes = np.mean([len(r.get("annotations", ())) for r in records])
    source = args.loader_data[0] if args.loader_dataset == _LOADER_DATASET else args.loader_dataset
    emit(
        lines,
        [
            "### Data loader",
            "",
            f"Training mapper on {len(records)} images of {source} ({boxes:.0f} boxes per "
            f"image; read, augment to about {mean_size[0]:.0f}x{mean_size[1]:.0f}, targets) in "
            "one process, i.e. the throughput of one DataLoader worker. Rendering the "
            f"heatmaps took {1000 * render.seconds / len(records):.2f} ms per image of that "
            f"({render.seconds / base:.1%} of the time without them); image decoding "
            "dominates, so the difference between the two rows is mostly noise.",
            "",
            tabulate(
                rows,
                headers=["mapper", "images/s", "ms/image", "time / without"],
                tablefmt="pipe",
                floatfmt=".3f",
            ),
            "",
        ],
    )


class Timed:
    """Wraps a callable and adds up the time spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[512, 853],
        metavar=("H", "W"),
        help="network input size",
    )
    parser.add_argument("--boxes", type=int, default=150, help="objects in the training input")
    parser.add_argument("--iters", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--infer-iters", type=int, default=10, help="timed inferences per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--render-boxes", type=int, nargs="+", default=[0, 10, 50, 100, 150, 300, 600, 1000]
    )
    parser.add_argument("--render-repeats", type=int, default=50)
    parser.add_argument(
        "--loader-data",
        nargs=2,
        metavar=("IMAGE_ROOT", "ANNOTATIONS"),
        default=[
            str(SHARED / "tobacco_shelves" / "images"),
            str(SHARED / "tobacco_shelves" / "annotations.csv"),
        ],
        help="shelf photos for the data-loader test (default: the shared "
        "tobacco_shelves photos, 1.3-9 MP)",
    )
    parser.add_argument("--loader-dataset", help="a registered dataset instead of --loader-data")
    parser.add_argument("--loader-images", type=int, default=24)
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--output", help="also append the report (Markdown) to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    lines = []
    emit(
        lines,
        [
            f"## ResNet-{args.depth}, {args.size[0]}x{args.size[1]}",
            "",
            f"`{command}`",
            "",
            f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs "
            f"seen, {args.threads} thread(s) used.",
            "",
        ],
    )
    if not args.skip_models:
        benchmark_models(args, lines)
    if not args.skip_render:
        benchmark_render(args, lines)
    if not args.skip_loader:
        benchmark_loader(args, lines)
    append_report(args.output, lines)


if __name__ == "__main__":
    main()
