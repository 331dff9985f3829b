
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.utils.events import EventStorage

from common import get_config
from gaussian_retina.baselines.soft_iou import (
    SoftIoURetinaNet,
    SoftIoURetinaNetHead,
    soft_iou_targets,
)



def _cfg(**soft_iou):
    cfg = get_config("synthetic/goldman_R18.yaml", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "")
    for key, value in soft_iou.items():
        setattr(cfg.MODEL.SOFT_IOU, key, value)
    return cfg


def test_soft_iou_targets_by_hand():
    anchors = torch.tensor(
        [
            [0.0, 0, 10, 10],
            [0, 0, 10, 10],
            [0, 0, 20, 20],
            [5, 5, 15, 15],
            [0, 0, 10, 10],
            [0, 0, 10, 10],
        ]
    )
    deltas = torch.zeros(1, 6, 4)
    deltas[0, 4, 0] = 0.5  # shifted right by half its width: [5, 0, 15, 10]
    gt_boxes = torch.tensor([[0.0, 0, 10, 10]]).repeat(6, 1)[None]
    # positive, positive below the floor, positive, background (K = 1), positive, ignored
    gt_labels = torch.tensor([[0, 0, 0, 1, 0, -1]])
    scores = torch.tensor([[0.5, 0.05, 0.5, 0.9, 0.5, 0.9]])[..., None]
    mask, targets = soft_iou_targets(
        anchors, deltas, scores, gt_labels, gt_boxes, Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), 1, 0.1
    )
    assert mask.tolist() == [[True, False, True, False, True, False]]
    torch.testing.assert_close(targets, torch.tensor([1.0, 0.25, 50.0 / 150.0]))


def test_soft_iou_targets_use_the_score_of_the_gt_class():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    gt_boxes = torch.tensor([[0.0, 0, 10, 10]]).repeat(2, 1)[None]
    gt_labels = torch.tensor([[0, 1]])  # K = 2 classes
    scores = torch.tensor([[[0.05, 0.9], [0.05, 0.9]]])  # confident in class 1 only
    mask, targets = soft_iou_targets(
        anchors,
        torch.zeros(1, 2, 4),
        scores,
        gt_labels,
        gt_boxes,
        Box2BoxTransform((1.0,) * 4),
        2,
        0.1,
    )
    assert mask.tolist() == [[False, True]]
    assert targets.tolist() == [1.0]


def test_head_adds_an_iou_branch_of_its_own():
    shapes = [ShapeSpec(channels=16, stride=s) for s in (8, 16)]
    head = SoftIoURetinaNetHead(
        input_shape=shapes, num_classes=3, num_anchors=9, conv_dims=[16] * 4
    )
    convs = [m for m in head.iou_subnet if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (3, 3) for c in convs)
    assert head.iou_pred.kernel_size == (3, 3)
    logits, deltas, ious = head([torch.rand(2, 16, 12, 10), torch.rand(2, 16, 6, 5)])
    assert [x.shape for x in ious] == [torch.Size([2, 9, 12, 10]), torch.Size([2, 9, 6, 5])]
    assert logits[0].shape == (2, 27, 12, 10) and deltas[0].shape == (2, 36, 12, 10)


def test_joint_training_trains_the_iou_branch_with_the_detector(two_image_batch):
    model = build_model(_cfg(SCORE_FLOOR=0.0))
    assert isinstance(model, SoftIoURetinaNet)
    model.train()
    with EventStorage():
        losses = model(two_image_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_iou"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_iou"] > 0
    sum(losses.values()).backward()
    assert model.head.iou_pred.weight.grad.abs().sum() > 0
    assert model.head.cls_score.weight.grad.abs().sum() > 0


def test_score_floor_keeps_untrained_anchors_out(two_image_batch):
    # At initialisation every objectness is the prior, 0.01, below the default floor of 0.1.
    model = build_model(_cfg())
    model.train()
    with EventStorage() as storage:
        losses = model(two_image_batch())
        assert storage.latest()["num_iou_anchors"][0] == 0
    assert losses["loss_iou"].item() == 0


def test_second_stage_trains_only_the_iou_branch(two_image_batch):
    model = build_model(_cfg(SCORE_FLOOR=0.0, FREEZE_DETECTOR=True))
    model.train()
    assert not model.backbone.training and model.head.iou_subnet.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("head.iou_subnet.", "head.iou_pred.")) for n in trainable
    )
    with EventStorage():
        losses = model(two_image_batch())
    assert set(losses) == {"loss_iou"}
    losses["loss_iou"].backward()
    assert model.head.iou_pred.weight.grad is not None


@pytest.mark.parametrize("merger", ["em", "nms"])
def test_inference_mixes_objectness_and_soft_iou(merger):
    cfg = _cfg(MERGER=merger, OBJECTNESS_WEIGHT=0.3)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # an untrained model: let every anchor through
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 128, 160) * 255, "height": 256, "width": 320}])
    inst = out[0]["instances"]
    assert 0 < len(inst) <= 50
    assert inst.image_size == (256, 320)
    torch.testing.assert_close(inst.scores, 0.3 * inst.objectness + 0.7 * inst.soft_iou)
    assert (inst.scores[:-1] >= inst.scores[1:]).all()


def test_unknown_merger_is_an_error():
    with pytest.raises(ValueError, match="MERGER"):
        build_model(_cfg(MERGER="soft-nms"))
