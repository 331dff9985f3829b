"""
The benchmarks' shared harness (not part of the package): inputs synthesised to SKU-110K's
statistics, training steps through Detectron2's own trainers, the peak memory of a step measured
in a fresh process, and the machine's description. The tools import it by name
(``from benchmark_harness import ...``): a script's own folder is on ``sys.path``.
"""

import multiprocessing
import os
import platform
import resource
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet, build_model
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from gaussian_retina.data import build_gaussian_renderer
from gaussian_retina.engine import get_project_cfg
from gaussian_retina.modeling import GaussianRetinaNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def append_report(path: Optional[str], lines: Sequence[str]) -> None:
    """Appends a benchmark's Markdown lines to ``path`` (nothing when it is empty)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"Appended to {path}")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as `uptime` prints them: timings are read against it."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            return next(names)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_description(device: str = "cpu") -> str:
    """The machine a measurement ran on, in words: the GPU's name, or the CPU's model and cores."""
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB (CUDA {torch.version.cuda})"
    return f"{cpu_name()}, {os.cpu_count()} CPUs seen, no GPU used"


def benchmark_cfg(config_file: str, *, depth: int = 50, device: str = "cpu", opts: Sequence = ()):
    """
    The cfg of ``config_file`` (a path, or a name under configs/) without pretrained weights, on
    ``device``, with a ResNet of ``depth``; then ``opts`` (KEY VALUE ...).
    """
    path = Path(config_file)
    cfg = get_project_cfg(path if path.is_file() else CONFIGS / config_file)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.merge_from_list(list(opts))
    return cfg


def sku110k_boxes(rng: np.random.Generator, num: int, height: int, width: int) -> np.ndarray:
    """
    ``num`` boxes laid out as on SKU-110K's shelf photos: rows of products standing on shelves,
    touching their neighbours, filling the image (about 150 per 2-3 MP photo; at 800x1333, 150
    boxes are about 60x95 px). Products are 0.4-1 times as wide as tall and 75-95 % of the shelf
    pitch high; more boxes make more, smaller rows.

    Returns:
        (num, 4) float32 XYXY boxes inside the ``height`` x ``width`` image.
    """
    if num == 0:
        return np.zeros((0, 4), np.float32)
    aspect, fill = 0.7, 0.85  # mean width / height; mean product height / shelf pitch
    rows = int(np.clip(round(np.sqrt(num * aspect * fill * height / width)), 1, num))
    pitch = height / rows
    per_row = np.full(rows, num // rows)
    per_row[: num % rows] += 1
    boxes = []
    for r, count in enumerate(per_row):
        span = rng.uniform(0.9, 1.0) * width
        x0 = rng.uniform(0, width - span)
        widths = rng.uniform(0.8, 1.2, count)
        edges = x0 + span * np.concatenate([[0.0], np.cumsum(widths)]) / widths.sum()
        bottom = (r + 1) * pitch - 0.03 * pitch
        tops = bottom - rng.uniform(0.75, 0.95, count) * pitch
        boxes.append(np.stack([edges[:-1], tops, edges[1:], np.full(count, bottom)], axis=1))
    return np.concatenate(boxes).astype(np.float32)


def synthetic_training_input(boxes: np.ndarray, height: int, width: int, *, renderer=None,
                             seed: int = 0) -> Dict:
    """
    One training input as the mappers give it: a random uint8 image (its content does not change
    the cost), ``instances`` with the boxes, and the rendered ``gaussian_map`` when ``renderer``
    (a :class:`GaussianMapRenderer`) is given.
    """
    rng = np.random.default_rng(seed)
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.as_tensor(boxes))
    instances.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    image = torch.as_tensor(rng.integers(0, 256, (3, height, width), dtype=np.uint8))
    out = {"image": image, "height": height, "width": width, "instances": instances}
    if renderer is not None:
        out["gaussian_map"] = torch.as_tensor(renderer(boxes, (height, width)))
    return out


def make_training_batch(cfg, num_images: int, num_boxes: int, size, seed: int = 0) -> List[Dict]:
    """``num_images`` inputs of ``size`` (H, W) with ``num_boxes`` SKU-110K-like boxes each."""
    height, width = size
    renderer = None
    if issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), GaussianRetinaNet):
        renderer = build_gaussian_renderer(cfg)  # as the Trainer's mapper
    return [synthetic_training_input(sku110k_boxes(np.random.default_rng(seed + i), num_boxes,
                                                   height, width),
                                     height, width, renderer=renderer, seed=seed + i)
            for i in range(num_images)]


class _Repeat:
    """A data loader that yields the same batch forever."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def make_trainer(cfg, model, batch, *, amp: bool = False):
    """
    The trainer ``DefaultTrainer`` would run (``AMPTrainer`` with ``amp``, else ``SimpleTrainer``)
    with cfg's optimizer, over ``batch`` repeated. Call ``run_step()`` inside an EventStorage.
    """
    optimizer = DefaultTrainer.build_optimizer(cfg, model)
    return (AMPTrainer if amp else SimpleTrainer)(model, _Repeat(batch), optimizer)


@torch.no_grad()
def tame_random_init(model, scale: float = 0.25):
    """
    Benchmarks build models without ImageNet weights. With the identity statistics of a fresh
    FrozenBN, a randomly initialised ResNet-50's activations then grow block by block to about
    1e4 (losses in the hundreds, near float16's range); scaling the last norm of every residual
    branch by ``scale`` keeps them at a pretrained network's magnitude (about 1e2), at the same
    cost. Returns ``model``.
    """
    for block in model.modules():
        if isinstance(block, (BottleneckBlock, BasicBlock)):
            last = block.conv3 if isinstance(block, BottleneckBlock) else block.conv2
            if getattr(last.norm, "weight", None) is not None:
                last.norm.weight.mul_(scale)
    return model


def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Sets the peak RSS to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(conn, prepare, args, threads):
    try:
        torch.set_num_threads(threads)
        step = prepare(*args)
        before = _rss_kb("VmRSS")
        exact = _reset_peak_rss()
        start = time.perf_counter()
        info = step() or {}
        seconds = time.perf_counter() - start
        peak = _rss_kb("VmHWM") if exact else None
        if peak is None:  # since the process started: an upper bound of the step's own peak
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send(dict(info, rss_before_mb=before / 1024 if before else float("nan"),
                       peak_rss_mb=peak / 1024, peak_is_step_only=exact, seconds=seconds))
    except BaseException as e:  # the parent reports it
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def measure_peak_memory(prepare: Callable, *args, threads: int = 1) -> Dict:
    """
    Runs ``step = prepare(*args)`` then ``step()`` in a fresh (spawned) process and returns the
    resident memory before the step and its peak during the step (MB), the step's wall time, and
    what ``step`` returned (a dict). Peak RSS, not tracemalloc: torch allocates outside Python's
    allocator. ``prepare`` must be importable (a module-level function).
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(send, prepare, args, threads))
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = {"error": "the process died (out of memory?)"}
    proc.join()
    if proc.exitcode and "error" not in result:
        result["error"] = f"exit code {proc.exitcode}"
    return result


def _model_and_batch(config_file, size, num_boxes, batch_size, matching, opts):
    cfg = benchmark_cfg(config_file, opts=opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    if matching == "detectron2":
        # One chunk: Detectron2's full IoU matrix, as RetinaNet.label_anchors.
        model.max_iou_pairs = None
    elif matching != "chunked":
        raise ValueError(f"matching must be 'detectron2' or 'chunked', got {matching!r}")
    return cfg, model, make_training_batch(cfg, batch_size, num_boxes, size)


def label_anchors_step(config_file, size, num_boxes, batch_size, matching, opts=()):
    """
    For :func:`measure_peak_memory`: anchor labelling alone (``label_anchors`` of the model's
    anchors at ``size`` against ``num_boxes`` boxes per image), by ``matching``: "detectron2"
    (RetinaNet.label_anchors) or "chunked" (:class:`ChunkedMatchingRetinaNet`).
    """
    cfg, model, batch = _model_and_batch(config_file, size, num_boxes, batch_size, matching, opts)
    model.train()
    with torch.no_grad():
        images = model.preprocess_image(batch)
        # The anchor generator only reads the feature maps' sizes.
        strides = [s.stride for s in model.backbone.output_shape().values()]
        names = list(model.backbone.output_shape())
        height, width = images.tensor.shape[-2:]
        shapes = {n: (-(-height // s), -(-width // s)) for n, s in zip(names, strides)}
        anchors = model.anchor_generator(
            [torch.empty(1, 1, *shapes[f]) for f in model.head_in_features])
    gts = [x["instances"] for x in batch]
    if matching == "chunked":
        label = model.label_anchors
    else:
        label = lambda a, g: RetinaNet.label_anchors(model, a, g)  # noqa: E731

    def step():
        labels, _ = label(anchors, gts)
        num_anchors = sum(len(a) for a in anchors)
        positives = sum(int(((x >= 0) & (x < model.num_classes)).sum()) for x in labels)
        return {"anchors": num_anchors, "positive_anchors": positives}

    return step


def training_step(config_file, size, num_boxes, batch_size, matching, opts=()):
    """
    For :func:`measure_peak_memory`: one training step (forward with losses, backward, SGD step
    with cfg's optimizer) through ``SimpleTrainer.run_step``; ``matching`` as in
    :func:`label_anchors_step`.
    """
    cfg, model, batch = _model_and_batch(config_file, size, num_boxes, batch_size, matching, opts)
    model.train()
    trainer = make_trainer(cfg, model, batch)

    def step():
        with EventStorage(0) as storage:
            trainer.storage = storage
            trainer.run_step()
            losses = {k: v[0] for k, v in storage.latest().items() if "loss" in k}
        return {"losses": losses}

    return step


def _synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


class PeakMemory:
    """
    Context manager: ``mb`` is the peak memory inside it, in MB. On a GPU, the tensors allocated
    (``torch.cuda.max_memory_allocated``; ``reserved_mb`` adds the caching allocator's reserve);
    on the CPU, the process's peak resident memory (model and inputs included), or NaN where the
    kernel cannot reset the peak.
    """

    def __init__(self, device):
        self.device = str(device)
        self.mb = self.reserved_mb = float("nan")

    def __enter__(self):
        if self.device.startswith("cuda"):
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        else:
            self._exact = _reset_peak_rss()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            _synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(torch.device(self.device)) / 2**20
            self.reserved_mb = torch.cuda.max_memory_reserved(torch.device(self.device)) / 2**20
        elif self._exact:
            self.mb = _rss_kb("VmHWM") / 1024
        return False


def time_training(trainer, *, iters: int, warmup: int, device: str) -> Dict:
    """
    Runs ``warmup`` then ``iters`` steps of ``trainer`` (see :func:`make_trainer`).

    Returns:
        dict with "seconds_per_iter" (mean over the timed steps), "peak_mb" and "reserved_mb"
        (see :class:`PeakMemory`, over the timed steps) and "losses" (the last step's).
    """
    with EventStorage(0) as storage:
        trainer.storage = storage
        for _ in range(warmup):
            trainer.run_step()
            storage.step()
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            for _ in range(iters):
                trainer.run_step()
                storage.step()
            _synchronize(device)
            seconds = (time.perf_counter() - start) / iters
        losses = {k: v[0] for k, v in storage.latest().items() if "loss" in k}
    return {"seconds_per_iter": seconds, "peak_mb": mem.mb, "reserved_mb": mem.reserved_mb,
            "losses": losses}


@torch.no_grad()
def time_inference(model, inputs: List[Dict], *, iters: int, warmup: int, device: str,
                   amp: bool = False) -> Dict:
    """
    Median wall time of ``model(inputs)`` in eval mode over ``iters`` calls after ``warmup``,
    under float16 autocast with ``amp`` (Detectron2: "to use AMP in inference, run inference
    under autocast"). Returns "seconds" and "peak_mb" (see :class:`PeakMemory`).
    """
    model.eval()
    device_type = torch.device(device).type
    times = []
    with torch.autocast(device_type, dtype=torch.float16, enabled=amp):
        for _ in range(warmup):
            model(inputs)
        with PeakMemory(device) as mem:
            for _ in range(iters):
                _synchronize(device)
                start = time.perf_counter()
                model(inputs)
                _synchronize(device)
                times.append(time.perf_counter() - start)
    return {"seconds": float(np.median(times)), "peak_mb": mem.mb}
