#!/usr/bin/env python3
"""
Speed and cost of GLN and GDN against RetinaNet, untrained (no download), in one of two reports.

``--report cost`` (the default on the CPU): training-step and inference time as ratios to
RetinaNet, parameters and FLOPs, Gaussian-map rendering time against the number of boxes, and the
training mapper's throughput with and without the heatmaps. GLN and GDN get RetinaNet's weights
for the parts they share, so all three post-process the same detections; timings are medians over
interleaved iterations (load from other processes hits the three alike), CPU time and wall time.

``--report throughput`` (the default on a GPU): training throughput and peak memory through the
trainers DefaultTrainer runs (SimpleTrainer; AMPTrainer for AMP) on one batch repeated, per batch
size, fp32 and AMP; inference speed; the time of one SKU-110K epoch and of the paper's schedule.

    python tools/benchmark_speed.py --depth 50 --size 512 853 --output speed_benchmark.md
    python tools/benchmark_speed.py --depth 50 --size 800 1333 --iters 3 --skip-render --skip-loader
    python tools/benchmark_speed.py --device cuda --output gpu_benchmark.md
    # the throughput report's code path on the CPU (AMP needs CUDA, so fp32 only)
    python tools/benchmark_speed.py --report throughput --size 256 384 --batch 1 --iters 2 \\
        --warmup 1 --boxes 150 --precision fp32 --infer-batch 1 --infer-iters 1
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
import gc  # noqa: E402
import itertools  # noqa: E402
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

from gaussian_retina import GaussianDatasetMapper, GaussianMapRenderer  # noqa: E402
from gaussian_retina import ShelfDatasetMapper  # noqa: E402
from gaussian_retina.data import build_gaussian_renderer  # noqa: E402
from gaussian_retina.shelves import configure_shelf_datasets, register_retail_dataset  # noqa: E402
from benchmark_harness import (  # noqa: E402
    append_report, benchmark_cfg, device_description, make_trainer, make_training_batch,
    sku110k_boxes, synthetic_training_input, tame_random_init, time_inference, time_training,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
_LOADER_DATASET = "speed_benchmark_shelves"
MODELS = {"RetinaNet": "retinanet", "GDN": "gdn", "GLN": "gln"}
SKU110K_TRAIN_IMAGES = 8233
OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)
# Each report's defaults: the cost report fits a CPU, the throughput report a GPU's batches.
DEFAULTS = {
    "cost": dict(size=[512, 853], boxes=[150], iters=5, infer_iters=10, warmup=1),
    "throughput": dict(size=[800, 1333], boxes=[150, 300], iters=10, infer_iters=20, warmup=3),
}


def make_input(cfg, args):
    """One image as the mapper would give it, with its boxes and Gaussian target."""
    height, width = args.size
    boxes = sku110k_boxes(np.random.default_rng(0), args.boxes[0], height, width)
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


def emit(lines, title, note, table=None):
    """Appends a report block (title, note, table) and prints it at once."""
    block = ([f"### {title}", ""] if title else []) + [note, ""] + ([table, ""] if table else [])
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
        branch = getattr(model, "gaussian_branch", nn.Identity())
        branch = sum(p.numel() for p in branch.parameters())
        model.eval()
        rows.append([name, params / 1e6, branch / 1e6, gflops(model, inp["image"], False),
                     gflops(model, inp["image"], True)])
    base = rows[0]
    for row in rows:
        row += [row[1] / base[1], row[4] / base[4]]
    headers = ["model", "params (M)", "branch params (M)", "inference GFLOPs",
               "training-forward GFLOPs", "params / RetinaNet", "training GFLOPs / RetinaNet"]
    emit(lines, "Parameters and FLOPs",
         f"Detectron2's flop_count_operators of one inference on one {args.size[0]}x"
         f"{args.size[1]} input, with the Gaussian branch for the training column; ops fvcore "
         "cannot count (NMS, sorting) and losses are left out, and one fused multiply-add "
         "counts as one flop.",
         tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f"))


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
    headers = ["model", "train CPU (s)", "ratio", "train wall (s)", "ratio", "inference CPU (s)",
               "ratio", "inference wall (s)", "ratio", "detections"]
    emit(lines, "Training-step and inference time",
         f"One {args.size[0]}x{args.size[1]} image with {args.boxes[0]} boxes, "
         f"ResNet-{args.depth}, batch 1, {torch.get_num_threads()} thread(s); medians of "
         f"{args.iters} training steps (forward with losses, backward, SGD step) and "
         f"{args.infer_iters} inferences, the models taking turns, after {args.warmup} "
         "warm-up. CPU = this process's CPU time, the cost; wall = elapsed time, which also "
         "counts waiting for cores held by other processes. Ratios are to RetinaNet.",
         tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f"))


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
    emit(lines, "Gaussian-map rendering",
         f"GaussianMapRenderer (stride 2, template 120, sigma 40, sum) for an {height}x{width} "
         f"image, one thread; rows of touching products as on SKU-110K's photos; "
         f"{args.render_repeats} repeats.",
         tabulate(rows, headers=["boxes", "median CPU (ms)", "best CPU (ms)"], tablefmt="pipe",
                  floatfmt=".2f"))


def benchmark_loader(args, lines):
    image_root, annotations = args.loader_data
    if not os.path.isfile(annotations):
        emit(lines, "Data loader", f"Skipped: {annotations} not found.")
        return
    register_retail_dataset(_LOADER_DATASET, image_root, annotations)
    cfg = benchmark_cfg("gln_R50.yaml", depth=args.depth, opts=args.opts)
    configure_shelf_datasets(cfg, [_LOADER_DATASET])
    records = DatasetCatalog.get(_LOADER_DATASET)[: args.loader_images]
    records = [records[i % len(records)] for i in range(args.loader_images)]
    without = ShelfDatasetMapper(cfg, is_train=True, mosaic_pool=records)
    with_maps = GaussianDatasetMapper(cfg, is_train=True, mosaic_pool=records)
    with_maps.gaussian_renderer = render = Timed(with_maps.gaussian_renderer)
    mappers = {"without heatmaps (ShelfDatasetMapper)": without,
               "with heatmaps (GaussianDatasetMapper)": with_maps}
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
    rows = [[name, len(t) / sum(t), 1000 * sum(t) / len(t), sum(t) / base]
            for name, t in times.items()]
    mean_size = np.mean(sizes, axis=0)
    boxes = np.mean([len(r.get("annotations", ())) for r in records])
    emit(lines, "Data loader",
         f"Training mapper on {len(records)} images of {image_root} ({boxes:.0f} boxes per "
         f"image; read, augment to about {mean_size[0]:.0f}x{mean_size[1]:.0f}, targets) in "
         "one process, i.e. the throughput of one DataLoader worker. Rendering the "
         f"heatmaps took {1000 * render.seconds / len(records):.2f} ms per image of that "
         f"({render.seconds / base:.1%} of the time without them); image decoding "
         "dominates, so the difference between the two rows is mostly noise.",
         tabulate(rows, headers=["mapper", "images/s", "ms/image", "time / without"],
                  tablefmt="pipe", floatfmt=".3f"))


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


def _throughput_model(name, args):
    # lr 0: an untrained model at the configs' lr diverges within a few steps (and Detectron2's
    # trainers stop on a non-finite loss); a step costs the same at any lr.
    opts = ["SOLVER.BASE_LR", 0.0, *args.opts]
    cfg = benchmark_cfg(f"{MODELS[name]}_R50.yaml", depth=args.depth, device=args.device, opts=opts)
    torch.manual_seed(0)
    return cfg, tame_random_init(build_model(cfg))


def _release(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _timed_or_why(measure, precision, device):
    """``measure()``'s result dict, or a string saying why there is none."""
    if precision == "amp" and not device.startswith("cuda"):
        return "n/a (AMP needs CUDA)"
    try:
        return measure()
    except OOM_ERRORS as e:
        return f"out of memory ({type(e).__name__})"


def throughput_training(args):
    """(model, precision, batch, boxes) -> result dict, or a string saying why there is none."""
    results = {}
    for key in itertools.product(args.models, args.precision, args.batch, args.boxes):
        name, precision, batch, boxes = key

        def measure():
            cfg, model = _throughput_model(name, args)
            data = make_training_batch(cfg, batch, boxes, args.size)
            trainer = make_trainer(cfg, model, data, amp=precision == "amp")
            r = time_training(trainer, iters=args.iters, warmup=args.warmup, device=args.device)
            return dict(r, images_per_s=batch / r["seconds_per_iter"])

        results[key] = _timed_or_why(measure, precision, args.device)
        _release(args.device)
        print(key, results[key], flush=True)
    return results


def throughput_inference(args):
    """(model, precision, batch) -> result dict, or a string saying why there is none."""
    results = {}
    for name in args.models:
        cfg, model = _throughput_model(name, args)
        for precision, batch in itertools.product(args.precision, args.infer_batch):
            inputs = [{k: x[k] for k in ("image", "height", "width")}
                      for x in make_training_batch(cfg, batch, 0, args.size)]

            def measure():
                r = time_inference(model, inputs, iters=args.infer_iters, warmup=args.warmup,
                                   device=args.device, amp=precision == "amp")
                return dict(r, images_per_s=batch / r["seconds"])

            results[(name, precision, batch)] = r = _timed_or_why(measure, precision, args.device)
            print((name, precision, batch), r, flush=True)
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


def training_tables(args, results):
    """Throughput and memory per case, as such and against RetinaNet and fp32; a run's cost."""
    rows, cost_rows = [], []
    for (name, precision, batch, boxes), r in results.items():
        base = results.get(("RetinaNet", precision, batch, boxes))
        fp32 = results.get((name, "fp32", batch, boxes))
        loss = f"{r['losses']['total_loss']:.3f}" if isinstance(r, dict) else ""
        rows.append([name, precision, batch, boxes, _cell(r, "images_per_s"),
                     _ratio(r, base, "images_per_s"), _ratio(r, fp32, "images_per_s"),
                     _cell(r, "peak_mb", "{:.0f}"), _ratio(r, base, "peak_mb"),
                     _cell(r, "reserved_mb", "{:.0f}"), loss])
        if isinstance(r, dict) and boxes == min(args.boxes):
            epoch_h = SKU110K_TRAIN_IMAGES / r["images_per_s"] / 3600
            schedule_h = 16 * 10000 / r["images_per_s"] / 3600
            cost_rows.append([name, precision, batch, boxes, f"{epoch_h:.2f}", f"{schedule_h:.1f}"])
    headers = ["model", "precision", "batch", "boxes / image", "images/s", "/ RetinaNet", "/ fp32",
               "peak allocated (MB)", "/ RetinaNet", "peak reserved (MB)", "last total loss"]
    cost_headers = ["model", "precision", "batch", "boxes / image", "epoch (h)",
                    "10k x 16 schedule (h)"]
    return [
        "### Training",
        "",
        f"{args.size[0]}x{args.size[1]}, ResNet-{args.depth}, untrained, lr 0; {args.warmup} "
        f"warm-up then {args.iters} timed steps (forward with losses, backward, optimizer step) "
        "per case, one fresh model per case. Peak memory over the timed steps (GPU: tensors "
        "allocated / caching allocator's reserve; CPU: the process's peak RSS).",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
        "### What a run costs",
        "",
        f"One SKU-110K epoch ({SKU110K_TRAIN_IMAGES} images) and the paper-scale schedule "
        "(configs/*_R50.yaml: 160,000 images, batch 16 x 10k iterations) at the throughput "
        "measured at each batch size, on one device, data loading not counted.",
        "",
        tabulate(cost_rows, headers=cost_headers, tablefmt="pipe", disable_numparse=True),
        "",
    ]


def inference_table(args, results):
    rows = []
    for (name, precision, batch), r in results.items():
        base = results.get(("RetinaNet", precision, batch))
        ok = isinstance(r, dict)
        rows.append([
            name, precision, batch, f"{1000 * r['seconds']:.1f}" if ok else r,
            _cell(r, "images_per_s"),
            f"{r['seconds'] / base['seconds']:.2f}" if ok and isinstance(base, dict) else "",
            _cell(r, "peak_mb", "{:.0f}"),
        ])
    headers = ["model", "precision", "batch", "ms per batch", "images/s", "time / RetinaNet",
               "peak allocated (MB)"]
    return [
        "### Inference",
        "",
        f"{args.size[0]}x{args.size[1]}, median of {args.infer_iters} calls after {args.warmup} "
        "warm-up, post-processing included (untrained models: the number of candidates, hence NMS "
        "time, is not that of a trained model). AMP: the forward pass under float16 autocast.",
        "",
        tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
    ]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--report", choices=list(DEFAULTS),
                        help="default: cost on the CPU, throughput on a GPU")
    parser.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="network input size (default: 512 853 cost, 800 1333 throughput)")
    parser.add_argument("--boxes", type=int, nargs="+",
                        help="objects per training image (the cost report takes the first)")
    parser.add_argument("--iters", type=int, help="timed training steps per model or case")
    parser.add_argument("--infer-iters", type=int, help="timed inferences per model or case")
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    cost = parser.add_argument_group("cost report")
    cost.add_argument("--render-boxes", type=int, nargs="+",
                      default=[0, 10, 50, 100, 150, 300, 600, 1000])
    cost.add_argument("--render-repeats", type=int, default=50)
    cost.add_argument("--loader-data", nargs=2, metavar=("IMAGE_ROOT", "ANNOTATIONS"),
                      default=[str(SHARED / "tobacco_shelves" / "images"),
                               str(SHARED / "tobacco_shelves" / "annotations.csv")],
                      help="shelf photos for the data-loader test (default: the shared "
                      "tobacco_shelves photos, 1.3-9 MP)")
    cost.add_argument("--loader-images", type=int, default=24)
    cost.add_argument("--skip-models", action="store_true")
    cost.add_argument("--skip-render", action="store_true")
    cost.add_argument("--skip-loader", action="store_true")
    gpu = parser.add_argument_group("throughput report")
    gpu.add_argument("--models", nargs="+", default=["RetinaNet", "GLN", "GDN"],
                     choices=list(MODELS))
    gpu.add_argument("--batch", type=int, nargs="+", default=[4, 16], help="training batches")
    gpu.add_argument("--precision", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp"])
    gpu.add_argument("--infer-batch", type=int, nargs="+", default=[1, 8])
    gpu.add_argument("--skip-training", action="store_true")
    gpu.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--output", help="also append the report (Markdown) to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available: run on a GPU, or pass --device cpu")
    args.report = args.report or ("throughput" if args.device.startswith("cuda") else "cost")
    for key, value in DEFAULTS[args.report].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    if args.report == "throughput":
        lines = [f"## {device_description(args.device)}", "", f"`{command}`", "",
                 f"torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s).", ""]
        print("\n".join(lines), flush=True)
        if not args.skip_training:
            lines += training_tables(args, throughput_training(args))
        if not args.skip_inference:
            lines += inference_table(args, throughput_inference(args))
        print("\n".join(lines))
        append_report(args.output, lines)
        return
    lines = []
    emit(lines, None, f"## ResNet-{args.depth}, {args.size[0]}x{args.size[1]}\n\n`{command}`\n\n"
         f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs seen, "
         f"{args.threads} thread(s) used.")
    if not args.skip_models:
        benchmark_models(args, lines)
    if not args.skip_render:
        benchmark_render(args, lines)
    if not args.skip_loader:
        benchmark_loader(args, lines)
    append_report(args.output, lines)


if __name__ == "__main__":
    main()
