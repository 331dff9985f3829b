"""
Mixed precision (SOLVER.AMP.ENABLED: Detectron2's AMPTrainer runs the forward pass under
autocast). On the CPU, bfloat16 autocast stands in for the GPU's float16: every model trains a
step with finite float32 losses, and the Gaussian loss and its mining stay in float32.
"""

import pytest
import torch
from common import get_config
from detectron2.modeling import build_model
from detectron2.structures import ImageList
from detectron2.utils.events import EventStorage
from torch.overrides import TorchFunctionMode

from gaussian_retina import gaussian_map_loss, render_gaussian_map

CONFIGS = ["gln_R18", "gdn_R18", "retinanet_R18", "goldman_R18", "faster_rcnn_R18", "mask_rcnn_R18"]


def _batch(two_image_batch, mask_on=False):
    batch = two_image_batch(mask_on)
    for x in batch:
        boxes = x["instances"].gt_boxes.tensor.numpy()
        x["gaussian_map"] = torch.from_numpy(render_gaussian_map(boxes, x["image"].shape[-2:]))
    return batch


def _model(name, *opts):
    # SCORE_FLOOR 0: the untrained Soft-IoU branch trains on every positive anchor, so its loss
    # runs under autocast too; fewer RoIs keep the R-CNN steps short.
    cfg = get_config(
        f"synthetic/{name}.yaml",
        "MODEL.SOFT_IOU.SCORE_FLOOR",
        0.0,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        128,
        *opts,
    )
    torch.manual_seed(0)
    return build_model(cfg).train(), cfg


class _RecordTopk(TorchFunctionMode):
    """Records the dtype of every tensor ranked by topk (the Gaussian loss's mining)."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.topk, torch.Tensor.topk):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", CONFIGS)
def test_training_step_under_bfloat16_autocast(name, two_image_batch):
    model, cfg = _model(name)
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(_batch(two_image_batch, cfg.MODEL.MASK_ON))
        total = sum(losses.values())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    if name == "goldman_R18":
        assert losses["loss_iou"] > 0
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("normalize", ["image", "batch"])
def test_gaussian_loss_and_mining_are_float32_under_autocast(normalize, two_image_batch):
    model, cfg = _model("gln_R18", "MODEL.GAUSSIAN.LOSS_NORMALIZE", normalize)
    maps = []
    model.gaussian_branch.register_forward_hook(lambda m, i, out: maps.append(out))
    batch = _batch(two_image_batch)
    topk = _RecordTopk()
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16), topk:
        loss = model(batch)["loss_gaussian"]
    (pred,) = maps
    # Autocast did reach the branch, so float32 below is the loss's doing, not the input's.
    assert pred.dtype == torch.bfloat16
    assert topk.dtypes and all(d == torch.float32 for d in topk.dtypes), topk.dtypes
    assert loss.dtype == torch.float32

    targets = ImageList.from_tensors(
        [x["gaussian_map"][None] for x in batch],
        model.backbone.size_divisibility // model.gaussian_stride,
        pad_value=-1.0,
    ).tensor
    expected = cfg.MODEL.GAUSSIAN.LOSS_WEIGHT * gaussian_map_loss(
        pred.detach().float(), targets, **model.gaussian_loss_args
    )
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=0.0)
