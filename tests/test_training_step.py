"""
A training step's losses on a batch of two images of different sizes, against values computed
here independently: the Gaussian loss by a plain per-image loop over the valid (unpadded) map
pixels, the detection losses by Detectron2's own RetinaNet with the same weights.
"""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from gaussian_retina import render_gaussian_map

from common import get_config


def _cfg(config="synthetic/gln_R18.yaml", *opts):
    return get_config(config, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                      "MODEL.GAUSSIAN.NORM", "BN", *opts)


def _input(boxes, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "image": torch.randint(0, 256, (3, h, w), generator=g).float(),
        "instances": Instances((h, w), gt_boxes=Boxes(boxes),
                               gt_classes=torch.zeros(len(boxes), dtype=torch.long)),
        "gaussian_map": torch.from_numpy(render_gaussian_map(boxes.numpy(), (h, w))),
    }


def _batch():
    # Heights and widths both differ, so the smaller image is padded on two sides, and neither
    # size is a multiple of the backbone's 32.
    return [
        _input([[10, 10, 50, 90], [50, 10, 90, 90], [90, 12, 128, 88]], 100, 150, seed=0),
        _input([[4, 4, 40, 30], [60, 20, 100, 60]], 70, 200, seed=1),
    ]


def _reference_gaussian_loss(pred_maps, batch, stride, g):
    """
    The paper's eq. 3 as the config reads it, one image at a time over its own map only (the
    padding is never looked at): positives >= POS_THRESH, the hardest negatives in [0, NEG_THRESH],
    ceil(NEG_RATIO * positives) of them but at least MIN_NEGATIVES (or all there are).
    """
    per_image, pooled = [], []
    for pred, x in zip(pred_maps, batch):
        target = x["gaussian_map"]
        h, w = target.shape
        assert (h, w) == (math.ceil(x["image"].shape[1] / stride),
                          math.ceil(x["image"].shape[2] / stride))
        err = ((pred[0, :h, :w] - target) ** 2).flatten().tolist()
        t = target.flatten().tolist()
        pos = [e for e, v in zip(err, t) if v >= g.POS_THRESH]
        neg = sorted((e for e, v in zip(err, t) if 0 <= v <= g.NEG_THRESH), reverse=True)
        num_neg = min(max(math.ceil(len(pos) * g.NEG_RATIO), g.MIN_NEGATIVES), len(neg))
        mined = neg[:num_neg]
        per_image.append(sum(pos) / max(len(pos), 1) + sum(mined) / max(len(mined), 1))
        pooled += pos + mined
    if g.LOSS_NORMALIZE == "image":
        return sum(per_image) / len(per_image)
    return sum(pooled) / len(pooled)


def _step(cfg, batch, storage=None):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    # A predictor that starts away from 0, so that every pixel's error, padding's included,
    # differs from its neighbours'.
    with torch.no_grad():
        model.gaussian_branch.subnet.predictor.bias.fill_(0.3)
    maps = []
    model.gaussian_branch.register_forward_hook(lambda m, i, out: maps.append(out.detach()))
    with storage or EventStorage():
        losses = model(batch)
    return model, losses, maps[0]


@pytest.mark.parametrize("opts", [
    (),  # the config's mining: a few hundred hardest negatives per image
    ("MODEL.GAUSSIAN.MIN_NEGATIVES", 100000),  # every negative: padding taken for one would count
    ("MODEL.GAUSSIAN.LOSS_NORMALIZE", "batch", "MODEL.GAUSSIAN.NEG_RATIO", 1.0),
    ("MODEL.GAUSSIAN.POS_THRESH", 0.8, "MODEL.GAUSSIAN.NEG_THRESH", 0.02,
     "MODEL.GAUSSIAN.MIN_NEGATIVES", 10, "MODEL.GAUSSIAN.LOSS_WEIGHT", 3.0),
])
def test_gaussian_loss_of_a_step_equals_the_per_image_reference(opts):
    cfg = _cfg("synthetic/gln_R18.yaml", *opts)
    batch = _batch()
    _, losses, pred_maps = _step(cfg, batch)
    g = cfg.MODEL.GAUSSIAN
    # The branch sees the padded batch: 100 x 200 padded to 128 x 224, at stride 2.
    assert pred_maps.shape == (2, 1, 64, 112)
    expected = _reference_gaussian_loss(pred_maps.double(), batch, g.OUT_STRIDE, g)
    assert losses["loss_gaussian"].item() == pytest.approx(g.LOSS_WEIGHT * expected, rel=1e-5)


def test_detection_losses_are_retinanets_times_their_weights():
    batch = _batch()
    cfg = _cfg("synthetic/gln_R18.yaml", "MODEL.RETINANET.CLS_LOSS_WEIGHT", 2.0,
               "MODEL.RETINANET.REG_LOSS_WEIGHT", 0.5)
    model, ours, _ = _step(cfg, batch)
    retina = build_model(_cfg("synthetic/retinanet_R18.yaml")).train()
    retina.load_state_dict(model.state_dict(), strict=False)
    with EventStorage():
        theirs = retina(batch)
    assert ours["loss_cls"].item() == pytest.approx(2.0 * theirs["loss_cls"].item(), rel=1e-5)
    assert ours["loss_box_reg"].item() == pytest.approx(
        0.5 * theirs["loss_box_reg"].item(), rel=1e-5
    )
    assert ours["loss_cls"].item() > 0 and ours["loss_box_reg"].item() > 0


def test_step_logs_the_positive_pixels_per_image():
    cfg = _cfg("synthetic/gln_R18.yaml", "MODEL.GAUSSIAN.POS_THRESH", 0.5)
    batch = _batch()
    # Pixels exactly at the threshold are positives (the loss mines target >= pos thresh).
    batch[0]["gaussian_map"][0, :3] = 0.5
    storage = EventStorage()
    _step(cfg, batch, storage)
    positives = sum(int((x["gaussian_map"] >= 0.5).sum()) for x in batch)
    assert positives > sum(int((x["gaussian_map"] > 0.5).sum()) for x in batch)
    assert storage.latest()["gaussian/pos_pixels"][0] == pytest.approx(positives / 2)


def test_targets_at_another_stride_are_an_error():
    cfg = _cfg("synthetic/gln_R18.yaml", "MODEL.GAUSSIAN.OUT_STRIDE", 4)
    message = (
        r"^Gaussian targets \(56, 104\) do not match the predicted map \(32, 56\): "
        r"MODEL\.GAUSSIAN\.OUT_STRIDE must equal the stride the dataset mapper rendered with\.$"
    )
    with pytest.raises(ValueError, match=message):
        _step(cfg, _batch())  # the batch's maps are rendered at stride 2
