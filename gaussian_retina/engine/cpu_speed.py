"""
Training on the CPU in bfloat16: the training forward pass under CPU autocast, and the
convolutions in the channels-last memory layout, which oneDNN runs fastest there. Detectron2's
``SOLVER.AMP`` is CUDA-only (float16 with a GradScaler), so it cannot serve on the CPU.
"""

import torch
from torch import nn

__all__ = ["TrainingAutocast", "cpu_has_native_bfloat16", "to_channels_last", "use_cpu_amp"]

_MODES = ("off", "on", "auto")


def cpu_has_native_bfloat16() -> bool:
    """
    Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX) and oneDNN may use them.
    Elsewhere oneDNN emulates bfloat16: a GLN step then costs about ten times float32's.
    """
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        # oneDNN's own answer honours ONEDNN_MAX_CPU_ISA, which the cpuinfo flags above do not.
        return bool(native and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a PyTorch without these private probes
        return False


def use_cpu_amp(mode: str, device: str) -> bool:
    """
    Resolves ``SOLVER.CPU_AMP.MODE`` ("off", "on" or "auto") for ``MODEL.DEVICE``; "auto" is
    "on" on a CPU device with native bfloat16 and "off" everywhere else.
    """
    if mode not in _MODES:
        raise ValueError(f"SOLVER.CPU_AMP.MODE must be one of {_MODES}, not {mode!r}")
    on_cpu = torch.device(device).type == "cpu"
    if mode == "on" and not on_cpu:
        raise ValueError(
            f"SOLVER.CPU_AMP.MODE 'on' is for MODEL.DEVICE 'cpu', not {device!r}: "
            "use Detectron2's SOLVER.AMP on CUDA."
        )
    return mode == "on" or (mode == "auto" and on_cpu and cpu_has_native_bfloat16())


def to_channels_last(model: nn.Module) -> nn.Module:
    """
    Puts the model's 4-d weights in the channels-last (NHWC) memory layout, in place; PyTorch's
    convolutions then keep their outputs in that layout. The values are unchanged, and
    checkpoints load into either layout.
    """
    return model.to(memory_format=torch.channels_last)


class TrainingAutocast(nn.Module):
    """
    Wraps a model so that its training forward pass, losses included, runs under
    ``torch.autocast`` on the CPU, as Detectron2's AMPTrainer does on CUDA; SimpleTrainer's own
    advice is to wrap the model. Autocast keeps the losses in float32 (binary cross-entropy,
    smooth L1 and MSE are on its float32 list) and the backward pass follows each forward op's
    type. The losses are returned in float32. Evaluation passes straight through, in float32.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        """
        Args:
            model: the model SimpleTrainer runs (DistributedDataParallel or not).
            dtype: the lower precision; bfloat16, which needs no loss scaling.
        """
        super().__init__()
        self.module = model
        self.dtype = dtype

    def forward(self, batched_inputs):
        if not self.module.training:
            return self.module(batched_inputs)
        with torch.autocast(device_type="cpu", dtype=self.dtype):
            losses = self.module(batched_inputs)
        return {name: loss.float() for name, loss in losses.items()}
