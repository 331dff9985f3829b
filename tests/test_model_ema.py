"""
MODEL_EMA: the moving average's arithmetic, and that training ends with the average, saves it in
its checkpoints and gets it back on --resume.
"""

import pytest
import torch
from common import tiny_training_cfg
from torch import nn

from gaussian_retina.engine import Trainer
from gaussian_retina.engine.model_ema import ModelEMA, ModelEMAHook

NAME = "synthetic_shelves_ema_tiny"


def test_average_follows_the_weights_with_a_ramped_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(4, 3))  # moves the BN statistics and its step counter
    ema.update(model)
    decay = min(0.9, 2 / 11)  # the ramp at the first update
    now = model.state_dict()
    torch.testing.assert_close(
        ema.state["0.weight"], decay * start["0.weight"] + (1 - decay) * now["0.weight"]
    )
    torch.testing.assert_close(ema.state["1.running_mean"], (1 - decay) * now["1.running_mean"])
    assert ema.state["1.num_batches_tracked"] == 1  # not averaged: copied
    for _ in range(200):
        ema.update(model)
    torch.testing.assert_close(ema.state["0.weight"], now["0.weight"])  # the average catches up

    other = ModelEMA(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 201
    fresh = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    other.copy_to(fresh)
    torch.testing.assert_close(fresh.state_dict(), ema.state)
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"^MODEL_EMA.DECAY must be in \[0, 1\), got {decay}$"):
            ModelEMA(model, decay=decay)
    # Decay 0 is no average: the weights themselves at every update.
    copy = ModelEMA(model, decay=0.0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    copy.update(model)
    torch.testing.assert_close(copy.state["0.weight"], model.state_dict()["0.weight"])


def test_training_ends_with_the_average_and_resumes_it(tiny_training_split, tmp_path):
    overrides = {
        "SOLVER.MAX_ITER": 4,
        "SOLVER.CHECKPOINT_PERIOD": 2,
        "MODEL_EMA.ENABLED": True,
        "MODEL_EMA.DECAY": 0.5,
        "SOLVER.CPU_AMP.MODE": "on",  # the hook averages the model inside the autocast wrapper
    }
    cfg = tiny_training_cfg("synthetic/gln_R18.yaml", tiny_training_split, tmp_path, overrides)
    cfg.freeze()
    trainer = Trainer(cfg)
    names = [type(h).__name__ for h in trainer._hooks]
    assert names.index("ModelEMAHook") < names.index("PeriodicCheckpointer")
    trainer.resume_or_load(resume=False)
    trainer.train()

    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["model_ema"]["num_updates"] == 4
    for name, value in final["model"].items():
        assert torch.equal(value, final["model_ema"]["state"][name]), name
    middle = torch.load(tmp_path / "model_0000001.pth", weights_only=False)
    assert middle["model_ema"]["num_updates"] == 2
    assert any(
        not torch.equal(v, middle["model_ema"]["state"][k])
        for k, v in middle["model"].items()
        if v.dtype.is_floating_point
    ), "during training the model keeps its own weights"

    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2 and resumed.model_ema.num_updates == 2
    for name, value in middle["model_ema"]["state"].items():
        assert torch.equal(resumed.model_ema.state[name], value), name
    assert any(isinstance(h, ModelEMAHook) for h in resumed._hooks)
