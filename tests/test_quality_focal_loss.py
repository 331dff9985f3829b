import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from fvcore.nn import sigmoid_focal_loss

from common import get_config
from gaussian_retina.modeling import iou_quality_targets, quality_focal_loss
from test_model import _input


def test_loss_is_cross_entropy_weighted_by_the_distance_to_the_target():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0])
    targets = torch.tensor([0.5, 0.8, 0.0, 1.0])
    p = logits.sigmoid()
    bce = -(targets * p.log() + (1 - targets) * (1 - p).log())
    expected = (bce * (p - targets).abs() ** 2).sum()
    torch.testing.assert_close(quality_focal_loss(logits, targets), expected)
    # beta 1 weights by the distance itself; a score on its target costs nothing.
    torch.testing.assert_close(
        quality_focal_loss(logits, targets, beta=1.0), (bce * (p - targets).abs()).sum()
    )
    assert quality_focal_loss(torch.tensor([0.0]), torch.tensor([0.5])).item() == 0.0
    # With 0/1 targets it is the focal loss without alpha.
    binary = torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(
        quality_focal_loss(logits, binary),
        sigmoid_focal_loss(logits, binary, alpha=-1, gamma=2.0, reduction="sum"),
    )


def test_targets_are_each_positive_anchor_own_iou_in_its_class():
    transform = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    anchors = [
        Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])),
        Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0]])),
    ]
    # Anchor 0 predicts itself (IoU 100 / 150 with its box); anchor 1 is shifted right by half
    # its width (IoU 50 / 150); anchor 2 is background, anchor 3 (image 2) ignored.
    deltas = [
        torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]]]).repeat(2, 1, 1),
        torch.zeros(2, 1, 4),
    ]
    gt_boxes = torch.tensor(
        [
            [[0.0, 0.0, 10.0, 15.0], [20.0, 0.0, 30.0, 10.0], [0.0, 0.0, 1.0, 1.0]],
            [[0.0, 0.0, 10.0, 10.0]] * 3,
        ]
    )
    gt_labels = torch.tensor([[1, 0, 2], [-1, 2, 2]])
    targets = iou_quality_targets(transform, anchors, deltas, gt_boxes, gt_labels, num_classes=2)
    expected = torch.zeros(2, 3, 2)
    expected[0, 0, 1] = 100 / 150
    expected[0, 1, 0] = 50 / 150
    torch.testing.assert_close(targets, expected)
    assert not targets.requires_grad


def test_iou_aware_training_step_replaces_the_focal_loss_only():
    batch = [_input([[10, 10, 50, 90], [50, 10, 90, 90]]), _input([], 128, 224, seed=1)]
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
    losses = {}
    for iou_aware in (False, True):
        torch.manual_seed(0)
        cfg = get_config(
            "synthetic/gln_R18.yaml", *opts, "MODEL.RETINANET.IOU_AWARE_CLS", str(iou_aware)
        )
        model = build_model(cfg).train()
        assert model.iou_aware_cls is iou_aware
        with EventStorage():
            losses[iou_aware] = model(batch)
    assert losses[True]["loss_box_reg"] == losses[False]["loss_box_reg"]
    assert losses[True]["loss_gaussian"] == losses[False]["loss_gaussian"]
    assert math.isfinite(losses[True]["loss_cls"].item())
    assert losses[True]["loss_cls"].item() != pytest.approx(
        losses[False]["loss_cls"].item(), rel=1e-3
    )
    # It trains the classifier: its gradient reaches the head's class scores.
    losses[True]["loss_cls"].backward()
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_iou_aware_loss_covers_the_valid_anchors_over_the_normalizer():
    torch.manual_seed(0)
    cfg = get_config(
        "synthetic/gln_R18.yaml",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.RETINANET.IOU_AWARE_CLS",
        "True",
        "MODEL.RETINANET.CLS_LOSS_WEIGHT",
        "2.0",
    )
    model = build_model(cfg).train()
    # Scores near 0.5, not the prior's 0.01: an ignored anchor counted by mistake would cost
    # as much as a negative, not a millionth of the loss.
    torch.nn.init.zeros_(model.head.cls_score.bias)
    seen = {}
    losses_fn = model.losses
    model.losses = lambda *args: seen.update(args=args) or losses_fn(*args)
    batch = [
        _input([[10, 10, 50, 90], [50, 10, 90, 90], [90, 12, 128, 88]]),
        _input([], 128, 224, seed=1),
    ]
    with EventStorage():
        out = model(batch)
    anchors, pred_logits, gt_labels, pred_deltas, gt_boxes = seen["args"]
    labels = torch.stack(gt_labels)
    # The batch has all three kinds of anchor: the object's class (0), background, and ignored.
    assert {0, model.num_classes, -1} <= set(labels.unique().tolist())
    valid = labels >= 0
    targets = iou_quality_targets(
        model.box2box_transform,
        anchors,
        pred_deltas,
        torch.stack(gt_boxes),
        labels,
        model.num_classes,
    )
    expected = quality_focal_loss(torch.cat(pred_logits, dim=1)[valid], targets[valid])
    assert model.loss_normalizer != 1.0
    torch.testing.assert_close(out["loss_cls"], 2.0 * expected / model.loss_normalizer)
