"""
The baselines' configs (Goldman et al.'s Soft-IoU + EM-Merger, Faster R-CNN, Mask R-CNN): every
config merges, the R50 models build without weights, and every synthetic R18 model trains one
step on the CPU, including an image with no objects, and runs one inference.
"""


import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from common import ROOT, get_config

CONFIGS = ROOT / "configs"


R50 = {
    "goldman_R50.yaml": "SoftIoURetinaNet",
    "faster_rcnn_R50.yaml": "GeneralizedRCNN",
    "mask_rcnn_R50.yaml": "GeneralizedRCNN",
}
R18 = {
    "synthetic/goldman_R18.yaml": "SoftIoURetinaNet",
    "synthetic/faster_rcnn_R18.yaml": "GeneralizedRCNN",
    "synthetic/mask_rcnn_R18.yaml": "GeneralizedRCNN",
}


def _cfg(name):
    return get_config(name, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "")


@pytest.mark.parametrize("name", sorted({**R50, **R18}))
def test_config_merges_with_dense_scene_settings(name):
    cfg = _cfg(name)
    assert cfg.MODEL.META_ARCHITECTURE == {**R50, **R18}[name]
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300
    assert cfg.MODEL.MASK_ON == name.startswith(("mask_rcnn", "synthetic/mask_rcnn"))
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
        # ~150 objects per image: room for all of them among the sampled anchors and RoIs.
        assert cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE * cfg.MODEL.RPN.POSITIVE_FRACTION >= 150
        assert (
            cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE * cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION >= 150
        )
        assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST >= 1000
    else:
        assert cfg.MODEL.RETINANET.NUM_CLASSES == 1
        assert cfg.MODEL.SOFT_IOU.MERGER == "em"


@pytest.mark.parametrize("name", sorted(R50))
def test_r50_model_builds_without_weights(name):
    model = build_model(_cfg(name))
    assert type(model).__name__ == R50[name]
    assert model.backbone.bottom_up.stages[-1][-1].conv3.out_channels == 2048  # ResNet-50


@pytest.mark.parametrize("name", sorted(R18))
def test_r18_model_trains_one_step_and_infers(name, two_image_batch):
    cfg = _cfg(name)
    # Tiny inputs, so fewer RoIs and detections (an untrained R-CNN keeps all it may) keep the
    # step at a few seconds; the dense-scene values are checked above.
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 128
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    model = build_model(cfg)
    assert type(model).__name__ == R18[name]
    model.train()
    with EventStorage():
        losses = model(two_image_batch(cfg.MODEL.MASK_ON))
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON
    assert ("loss_iou" in losses) == (cfg.MODEL.META_ARCHITECTURE == "SoftIoURetinaNet")
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())

    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 128, 160) * 255}])
    inst = out[0]["instances"]
    assert len(inst) <= 20
    assert inst.has("pred_masks") == cfg.MODEL.MASK_ON
