"""
An exponential moving average (EMA) of the model's weights for training, as d2go and Ultralytics
keep one: the average, not the last step's weights, is what training ends with.
"""

import torch
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

from .cpu_speed import TrainingAutocast

__all__ = ["ModelEMA", "ModelEMAHook"]


def _unwrap(model):
    # The trainer's model may be DDP, TrainingAutocast (SOLVER.CPU_AMP), or both.
    while isinstance(model, (DistributedDataParallel, TrainingAutocast)):
        model = model.module
    return model


class ModelEMA:
    """
    The moving average of a model's state dict: floating-point entries are averaged, the others
    (BatchNorm's step counter) copied. The decay ramps up as min(decay, (1 + n) / (10 + n)) over
    the first updates n, as TensorFlow's ExponentialMovingAverage does, so that the random
    initialisation does not linger in the average. It has ``state_dict``/``load_state_dict``,
    so a checkpointer saves it and ``--resume`` restores it.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        """
        Args:
            model: the model whose weights are averaged (DistributedDataParallel or not).
            decay: the weight of the average at each update, in [0, 1).
        """
        if not 0 <= decay < 1:
            raise ValueError(f"MODEL_EMA.DECAY must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.state = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, value in _unwrap(model).state_dict().items():
            average = self.state[name]
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                average.copy_(value)

    def copy_to(self, model: torch.nn.Module) -> None:
        """Loads the average into ``model``."""
        _unwrap(model).load_state_dict(self.state)

    def state_dict(self):
        return {"state": self.state, "num_updates": self.num_updates}

    def load_state_dict(self, state_dict) -> None:
        self.num_updates = state_dict["num_updates"]
        for name, value in state_dict["state"].items():
            self.state[name].copy_(value)


class ModelEMAHook(HookBase):
    """
    Updates a :class:`ModelEMA` after every step, and after the last step loads the average into
    the trainer's model. Registered before the PeriodicCheckpointer, the average is what
    model_final.pth holds and what the final evaluation sees; evaluations during training
    (TEST.EVAL_PERIOD) see the weights of that step.
    """

    def __init__(self, model_ema: ModelEMA):
        self.model_ema = model_ema

    def after_step(self):
        self.model_ema.update(self.trainer.model)
        if self.trainer.iter == self.trainer.max_iter - 1:
            self.model_ema.copy_to(self.trainer.model)
