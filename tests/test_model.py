
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet, build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from common import ROOT, get_config
from gaussian_retina import GaussianRetinaNet, render_gaussian_map

def _cfg(config="synthetic/gln_R18.yaml", **overrides):
    return get_config(config, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
                      *[x for kv in overrides.items() for x in kv])


def _input(boxes, h=160, w=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst = Instances((h, w), gt_boxes=Boxes(boxes), gt_classes=torch.zeros(len(boxes), dtype=torch.long))
    return {
        "image": torch.randint(0, 256, (3, h, w), generator=g).float(),
        "instances": inst,
        "gaussian_map": torch.from_numpy(render_gaussian_map(boxes.numpy(), (h, w))),
    }


CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("path", sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")))
def test_every_config_merges(path):
    cfg = _cfg(path)
    # A name build_model can find: Detectron2's, or one this package registers.
    assert cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 300


@pytest.mark.parametrize("config", ["gln_R50.yaml", "gdn_R50.yaml"])
def test_paper_configs_build_without_weights(config):
    cfg = _cfg(config)
    assert cfg.MODEL.BACKBONE.FREEZE_AT < 2, "C2 must train: the branch reads it"
    model = build_model(cfg)
    assert isinstance(model, GaussianRetinaNet)
    res2 = model.backbone.bottom_up.res2
    assert all(p.requires_grad for p in res2.parameters())


@pytest.mark.parametrize("arch", ["layer", "decoder"])
def test_training_step_with_an_empty_image(arch):
    torch.manual_seed(0)
    model = build_model(_cfg(**{"MODEL.GAUSSIAN.ARCH": arch}))
    model.train()
    batch = [_input([[10, 10, 50, 90], [50, 10, 90, 90], [90, 12, 128, 88]]), _input([], 128, 224, seed=1)]
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_gaussian"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_gaussian"] > 0

    # The Gaussian loss alone reaches C2 (res2) and the stem through the branch.
    model.zero_grad()
    losses["loss_gaussian"].backward()
    res2_grad = model.backbone.bottom_up.res2[0].conv1.weight.grad
    assert res2_grad is not None and res2_grad.abs().sum() > 0
    head_grad = model.head.cls_score.weight.grad
    assert head_grad is None or head_grad.abs().sum() == 0


def test_loss_weights_scale_the_losses():
    batch = [_input([[10, 10, 50, 90]])]
    results = []
    for weights in [(1.0, 1.0, 1.0), (2.0, 3.0, 0.5)]:
        torch.manual_seed(0)
        cfg = _cfg(**{"MODEL.RETINANET.CLS_LOSS_WEIGHT": weights[0],
                      "MODEL.RETINANET.REG_LOSS_WEIGHT": weights[1],
                      "MODEL.GAUSSIAN.LOSS_WEIGHT": weights[2]})
        model = build_model(cfg).train()
        with EventStorage():
            results.append(model(batch))
    for key, w in zip(["loss_cls", "loss_box_reg", "loss_gaussian"], [2.0, 3.0, 0.5]):
        assert results[1][key].item() == pytest.approx(w * results[0][key].item(), rel=1e-4)


@pytest.mark.parametrize("arch", ["layer", "decoder"])
def test_inference_is_retinanet_with_the_same_weights(arch):
    torch.manual_seed(0)
    thresh = {"MODEL.RETINANET.SCORE_THRESH_TEST": 0.0}
    gaussian = build_model(_cfg(**{"MODEL.GAUSSIAN.ARCH": arch}, **thresh)).eval()
    torch.nn.init.normal_(gaussian.head.cls_score.bias)  # spread the scores an untrained head gives
    retina = build_model(_cfg("synthetic/retinanet_R18.yaml", **thresh)).eval()
    assert type(retina) is RetinaNet
    missing, unexpected = retina.load_state_dict(gaussian.state_dict(), strict=False)
    assert missing == []
    assert unexpected and all(k.startswith("gaussian_branch.") for k in unexpected)

    inputs = [{"image": _input([])["image"], "height": 320, "width": 400}]
    with torch.no_grad():
        ours = gaussian(inputs)[0]["instances"]
        theirs = retina(inputs)[0]["instances"]
    assert len(ours) > 100
    assert torch.equal(ours.pred_boxes.tensor, theirs.pred_boxes.tensor)
    assert torch.equal(ours.scores, theirs.scores)
    assert torch.equal(ours.pred_classes, theirs.pred_classes)


def test_eval_does_not_run_the_branch_unless_asked():
    assert build_model(_cfg(**{"MODEL.GAUSSIAN.RETURN_MAP_AT_TEST": True})).return_gaussian_map
    model = build_model(_cfg()).eval()
    assert not model.return_gaussian_map
    calls = []
    model.gaussian_branch.register_forward_hook(lambda *args: calls.append(1))
    inputs = [{"image": _input([])["image"]}]
    with torch.no_grad():
        out = model(inputs)
    assert calls == [] and "gaussian_map" not in out[0]

    model.return_gaussian_map = True
    with torch.no_grad():
        out = model([{"image": _input([], 161, 203)["image"]}])
    assert calls == [1]
    assert out[0]["gaussian_map"].shape == (1, 81, 102)
    assert "instances" in out[0]
