"""
SOLVER.CPU_AMP: training on the CPU with the forward pass in bfloat16 (the losses and evaluation
in float32) and the convolutions in the channels-last layout (the same values).
"""

import pytest
import torch
from common import (
    get_config,
    tiny_training_cfg,
)
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from gaussian_retina import render_gaussian_map
from gaussian_retina.engine import Trainer, cpu_speed
from gaussian_retina.engine.cpu_speed import (
    TrainingAutocast,
    to_channels_last,
    use_cpu_amp,
)

NAME = "synthetic_shelves_cpu_speed_tiny"


def _batch(two_image_batch):
    batch = two_image_batch()
    for x in batch:
        boxes = x["instances"].gt_boxes.tensor.numpy()
        x["gaussian_map"] = torch.from_numpy(render_gaussian_map(boxes, x["image"].shape[-2:]))
    return batch


@pytest.mark.parametrize("name", ["gln_R18", "retinanet_R18"])
def test_channels_last_keeps_the_values(name, two_image_batch):
    cfg = get_config(f"synthetic/{name}.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    reference = type(model)(**type(model).from_config(cfg)).train()
    reference.load_state_dict(model.state_dict())
    to_channels_last(model)
    conv = model.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = _batch(two_image_batch)
    with EventStorage():
        losses, expected = model(batch), reference(batch)
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-4, atol=1e-5)
    # Checkpoints move between the layouts: the values are what load_state_dict compares.
    reference.load_state_dict(model.state_dict())
    torch.testing.assert_close(reference.state_dict(), model.state_dict())


def test_training_autocast_runs_the_training_forward_in_bfloat16(two_image_batch):
    cfg = get_config("synthetic/gln_R18.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    wrapped = TrainingAutocast(model)
    dtypes = []
    model.head.register_forward_hook(lambda m, i, out: dtypes.append(out[0][0].dtype))
    with EventStorage():
        losses = wrapped(_batch(two_image_batch))
    assert dtypes == [torch.bfloat16]
    assert losses and all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)

    wrapped.eval()
    with torch.no_grad():
        (out,) = wrapped([{"image": two_image_batch()[0]["image"], "height": 64, "width": 80}])
    assert dtypes[-1] == torch.float32, "evaluation runs in float32"
    assert out["instances"].scores.dtype == torch.float32


def test_trainer_trains_with_both_and_saves_plain_checkpoints(tiny_training_split, tmp_path):
    overrides = {
        "DATASETS.TEST": (tiny_training_split,),
        "TEST.EVAL_PERIOD": 2,
        "SOLVER.MAX_ITER": 2,
        "INPUT.MIN_SIZE_TEST": 96,
        "INPUT.MAX_SIZE_TEST": 128,
        "SOLVER.CPU_AMP.MODE": "on",
    }
    cfg = tiny_training_cfg("synthetic/gln_R18.yaml", tiny_training_split, tmp_path, overrides)
    cfg.freeze()
    trainer = Trainer(cfg)
    assert isinstance(trainer.model, TrainingAutocast)
    conv = trainer.checkpointer.model.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in trainer.checkpointer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (
        "AP" in trainer._last_eval_results["bbox"]
    )  # the in-training evaluation ran through the wrapper
    storage = trainer.storage.latest()
    assert all(torch.isfinite(torch.tensor(storage[k][0])) for k in ("loss_cls", "loss_gaussian"))

    final = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert final.keys() == before.keys(), "the checkpoint holds the model, not the wrapper"
    assert all(v.dtype == before[k].dtype for k, v in final.items())
    assert any(not torch.equal(v, before[k]) for k, v in final.items())


def test_mode_resolves_by_device_and_cpu(monkeypatch):
    assert not use_cpu_amp("off", "cpu") and use_cpu_amp("on", "cpu")
    for native in (True, False):
        monkeypatch.setattr(cpu_speed, "cpu_has_native_bfloat16", lambda native=native: native)
        assert use_cpu_amp("auto", "cpu") is native
        assert not use_cpu_amp("auto", "cuda"), "on a GPU, Detectron2's SOLVER.AMP is the option"
    with pytest.raises(ValueError, match="SOLVER.AMP"):
        use_cpu_amp("on", "cuda:0")
    with pytest.raises(ValueError, match="one of"):
        use_cpu_amp("True", "cpu")
    cfg = get_config("synthetic/gln_R18.yaml", "SOLVER.CPU_AMP.MODE", "on", "MODEL.DEVICE", "cuda")
    with pytest.raises(ValueError, match="SOLVER.AMP"):
        Trainer(cfg)
