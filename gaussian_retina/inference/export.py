"""
Export of the RetinaNet family (:class:`GaussianRetinaNet`, Detectron2's ``RetinaNet``) to
TorchScript and ONNX, through Detectron2's :class:`~detectron2.export.TracingAdapter`, and running
the exported files back into boxes, scores and classes.

What the exported graph holds: the predict command's single pass (``--tiling off``) of the
test-time model, for one image:

* in: ``image``, (3, H, W) float32 in cfg.INPUT.FORMAT (BGR in the shipped configs), 0-255,
  already resized to the test size (:func:`resize_for_test`); H and W are dynamic;
* inside: normalisation, padding to the backbone's size divisibility, backbone, FPN, head,
  anchors, score threshold, top-k per level, box decoding, per-class NMS (torchvision's
  ``batched_nms``; ONNX ``NonMaxSuppression``), box voting where the config asks for it,
  clipping to the image and the removal of empty boxes (``detector_postprocess`` at scale 1);
  then, for a model with a Gaussian branch, the branch's map and each score multiplied by the
  map at its box's centre to ``rescore_alpha`` (the predict command's rescoring, on by default),
  the detections re-sorted, and the detections cap applied after it, as the command does;
* out: ``boxes`` (N, 4) XYXY in the input image's pixels, ``scores`` (N,), ``classes`` (N,)
  int64, best score first; N is dynamic.

The score threshold, top-k, NMS threshold, detections cap and rescoring power are those of the
model when it was exported (MODEL.RETINANET.*, TEST.DETECTIONS_PER_IMAGE, ``rescore_alpha``);
they are constants of the graph. With ``rescore_alpha=0`` (or a model without the branch) the
graph is RetinaNet's inference alone, ``model([{"image": image}])``. Scaling the boxes back to
the photo's size is left to the caller, as Detectron2's own export leaves
``detector_postprocess`` out. A model with Soft-NMS (MODEL.RETINANET.SOFT_NMS_SIGMA_TEST, as in
the fine-tuning config) is refused: its loop keeps a data-dependent number of boxes, which a trace
would freeze; export it with the key at 0, NMS at MODEL.RETINANET.NMS_THRESH_TEST.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``),
opset :data:`ONNX_OPSET`: it records the traced graph with its data-dependent sizes (score
threshold, top-k, NMS) as ONNX ops (``NonZero``, ``TopK``, ``NonMaxSuppression`` in an ``If``
that also covers no candidates at all). The dynamo exporter (``dynamo=True``, torch 2.14) fails
in ``torch.export``: Detectron2's ``Boxes.__init__`` branches on ``tensor.numel() == 0`` for
the data-dependent number of candidates (GuardOnDataDependentSymNode); making it pass would mean
patching Detectron2. Export on the CPU: the trace records the device.
"""

import contextlib
import functools
import os
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.export import TracingAdapter
from detectron2.modeling import RetinaNet
from detectron2.structures import Boxes, pairwise_iou
from torch import nn

from ..baselines import SoftIoURetinaNet
from .predictor import DEFAULT_RESCORE_ALPHA, forward_with_map, rescore_by_map

__all__ = [
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "resize_for_test",
    "detection_adapter",
    "export_torchscript",
    "export_onnx",
    "load_onnx",
    "run_pytorch",
    "run_torchscript",
    "run_onnx",
    "compare_detections",
]

# NonMaxSuppression needs opset >= 11 (Detectron2's STABLE_ONNX_OPSET_VERSION). The graph has the
# same ops at 11, 17 and 18, and the same detections in onnxruntime on a sample photo; 17 leaves
# room for older runtimes than 18 would.
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "scores", "classes")

Detections = Tuple[np.ndarray, np.ndarray, np.ndarray]


def resize_for_test(image: np.ndarray, min_size: int, max_size: int) -> torch.Tensor:
    """
    The network's input for a photo, resized as ``DefaultPredictor`` resizes it.

    Args:
        image: (H, W, 3) uint8 in the model's input format (cfg.INPUT.FORMAT).
        min_size, max_size: cfg.INPUT.MIN_SIZE_TEST and MAX_SIZE_TEST.
    Returns:
        (3, h, w) float32.
    """
    resized = T.ResizeShortestEdge([min_size, min_size], max_size).get_transform(image)
    resized = resized.apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)), dtype=torch.float32)


def _detections(model: nn.Module, image: torch.Tensor, rescore_alpha: float = 0.0):
    if rescore_alpha <= 0:
        instances = model([{"image": image}])[0]["instances"]
        return instances.pred_boxes.tensor, instances.scores, instances.pred_classes
    # The predict command's single pass (ShelfPredictor, tiling off): every detection NMS keeps
    # (up to the top-k candidates), rescored by the map, best first, then the cap.
    cap = model.max_detections_per_image
    model.max_detections_per_image = max(model.test_topk_candidates, cap)
    try:
        h, w = image.shape[-2:]
        (instances,), (gaussian_map,) = forward_with_map(
            model, [{"image": image, "height": h, "width": w}], with_map=True, crop_maps=False
        )
    finally:
        model.max_detections_per_image = cap
    boxes = instances.pred_boxes.tensor
    scores = rescore_by_map(instances.scores, boxes, gaussian_map, model.gaussian_stride, rescore_alpha)
    order = scores.argsort(descending=True)[:cap]
    return boxes[order], scores[order], instances.pred_classes[order]


def _rescore_alpha(model: nn.Module, rescore_alpha: Optional[float]) -> float:
    if rescore_alpha is None:  # the predict command's default
        rescore_alpha = DEFAULT_RESCORE_ALPHA if hasattr(model, "gaussian_branch") else 0.0
    if rescore_alpha > 0 and not hasattr(model, "gaussian_branch"):
        raise ValueError("rescoring by the Gaussian map needs a model with a Gaussian branch")
    return float(rescore_alpha)


def detection_adapter(
    model: nn.Module, image: torch.Tensor, rescore_alpha: Optional[float] = None
) -> TracingAdapter:
    """
    ``model`` (in eval mode) as a traceable function of one image tensor (3, H, W) returning
    (boxes, scores, classes): a fixed tuple rather than Instances, so that a saved file is
    usable without the adapter's output schema.

    Args:
        rescore_alpha: above 0, each score is multiplied by the Gaussian map at its box's
            centre to this power, as the predict command does (:func:`rescore_by_map`); None:
            the predict command's default (:data:`DEFAULT_RESCORE_ALPHA` for models with the
            branch, 0 for others).
    """
    if not isinstance(model, RetinaNet):
        raise TypeError(f"export supports the RetinaNet family, not {type(model).__name__}")
    if isinstance(model, SoftIoURetinaNet):
        # Its EM-Merger runs per region in numpy and scipy: a trace would freeze one image's
        # clusters into the graph.
        raise TypeError("SoftIoURetinaNet cannot be exported: the EM-Merger is not traceable")
    if model.training:
        raise ValueError("export a model in eval mode (model.eval())")
    sigma = getattr(model, "soft_nms_sigma", 0.0)
    if sigma > 0:
        # Its loop keeps a data-dependent number of boxes: a trace would freeze one image's count.
        raise ValueError(
            f"Soft-NMS (MODEL.RETINANET.SOFT_NMS_SIGMA_TEST {sigma}) cannot be exported: set it to "
            "0 to export NMS at MODEL.RETINANET.NMS_THRESH_TEST"
        )
    alpha = _rescore_alpha(model, rescore_alpha)
    # A new module is in training mode: torch.onnx.export would put the adapter, and so the model
    # inside it, back in that mode after exporting.
    return TracingAdapter(model, (image,), functools.partial(_detections, rescore_alpha=alpha)).eval()


@contextlib.contextmanager
def _quiet_tracing():
    # Tracing Detectron2 warns at every Python-level shape check and assert (dozens of
    # TracerWarnings), all of them about checks that hold for any input, and torch.jit /
    # torch.onnx announce their deprecation on every call.
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, UserWarning, FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def export_torchscript(
    model: nn.Module, image: torch.Tensor, path: str, *, rescore_alpha: Optional[float] = None
) -> str:
    """
    Traces ``model`` on ``image`` (3, H, W) and saves the TorchScript module at ``path``
    (returned). The module maps an image (3, H', W') of any size to (boxes, scores, classes).
    ``rescore_alpha``: see :func:`detection_adapter`.
    """
    adapter = detection_adapter(model, image, rescore_alpha)
    with _quiet_tracing(), torch.no_grad():
        # check_trace re-runs the model twice more to compare: the parity test does that.
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.jit.save(traced, path)
    return path


def export_onnx(
    model: nn.Module,
    image: torch.Tensor,
    path: str,
    *,
    opset: int = ONNX_OPSET,
    rescore_alpha: Optional[float] = None,
) -> str:
    """
    Exports ``model`` traced on ``image`` (3, H, W) to ONNX at ``path``, with input ``image``
    (3, height, width) and outputs :data:`OUTPUT_NAMES`, all sizes dynamic. Returns ``path``.
    """
    adapter = detection_adapter(model, image, rescore_alpha)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                "boxes": {0: "detections"},
                "scores": {0: "detections"},
                "classes": {0: "detections"},
            },
        )
    return path


def load_onnx(path: str, num_threads: int = 0):
    """
    An onnxruntime CPU session for an exported file; ``num_threads`` 0 lets onnxruntime pick
    (one per physical core).
    """
    import onnxruntime as ort  # the "export" extra; the rest of the package does not need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1 if num_threads else 0
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _numpy(outputs) -> Detections:
    boxes, scores, classes = (np.asarray(x.numpy() if torch.is_tensor(x) else x) for x in outputs)
    return boxes, scores, classes


def run_onnx(session, image: Union[torch.Tensor, np.ndarray]) -> Detections:
    """
    Runs an exported ONNX model (a path or a :func:`load_onnx` session) on one image
    (3, H, W) float32. Returns boxes (N, 4), scores (N,), classes (N,) as numpy arrays.
    """
    if isinstance(session, (str, os.PathLike)):
        session = load_onnx(str(session))
    image = image.numpy() if torch.is_tensor(image) else image
    outputs = session.run(list(OUTPUT_NAMES), {"image": np.ascontiguousarray(image, np.float32)})
    return _numpy(outputs)


def run_torchscript(module, image: torch.Tensor) -> Detections:
    """As :func:`run_onnx`, for a TorchScript file or module from :func:`export_torchscript`."""
    if isinstance(module, (str, os.PathLike)):
        module = torch.jit.load(str(module))
    with torch.no_grad():
        return _numpy(module(torch.as_tensor(image)))


def run_pytorch(
    model: nn.Module, image: torch.Tensor, rescore_alpha: Optional[float] = None
) -> Detections:
    """
    As :func:`run_onnx`, for the PyTorch model itself (in eval mode) and the same
    ``rescore_alpha`` as the export's: the reference.
    """
    with torch.no_grad():
        return _numpy(_detections(model, torch.as_tensor(image), _rescore_alpha(model, rescore_alpha)))


def compare_detections(reference: Detections, other: Detections) -> dict:
    """
    How far ``other`` is from ``reference``: each reference box is matched to the other's box
    of highest IoU.

    Returns:
        dict with ``count`` and ``other_count`` (detections in each), ``min_iou`` (the worst
        reference box's best IoU, 1.0 when there are no boxes), ``one_to_one`` (no two reference
        boxes matched the same box), ``max_score_diff`` and ``class_mismatches`` over the
        matched pairs.
    """
    boxes, scores, classes = reference
    o_boxes, o_scores, o_classes = other
    result = dict(
        count=len(boxes),
        other_count=len(o_boxes),
        min_iou=1.0,
        one_to_one=True,
        max_score_diff=0.0,
        class_mismatches=0,
    )
    if len(boxes) == 0 or len(o_boxes) == 0:
        result["min_iou"] = 1.0 if len(boxes) == len(o_boxes) else 0.0
        return result
    iou = pairwise_iou(
        Boxes(torch.as_tensor(boxes, dtype=torch.float64)),
        Boxes(torch.as_tensor(o_boxes, dtype=torch.float64)),
    ).numpy()
    match = iou.argmax(1)
    result.update(
        min_iou=float(iou[np.arange(len(boxes)), match].min()),
        one_to_one=len(np.unique(match)) == len(match),
        max_score_diff=float(np.abs(scores - o_scores[match]).max()),
        class_mismatches=int((classes != o_classes[match]).sum()),
    )
    return result
