from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

__all__ = [
    "GaussianSubnet",
    "GaussianLayerNetwork",
    "GaussianDecoderNetwork",
    "build_gaussian_branch",
    "resolve_norm",
]


def _conv_bn_relu(in_channels: int, out_channels: int, norm: str) -> Conv2d:
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        padding=1,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)
    return conv


def _upsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class GaussianSubnet(nn.Module):
    """
    The paper's gaussian subnet: brings its input to the output stride, then conv-BN-ReLU blocks
    and a 1x1 conv to one channel, the predicted map.
    """

    def __init__(self, in_channels: int, *, channels: int, num_convs: int, upsample: float, norm: str):
        """
        Args:
            in_channels: channels of the input feature map.
            channels: channels of each conv-BN-ReLU block.
            num_convs: number of blocks.
            upsample: factor from the input's stride to the output stride.
            norm: see :func:`detectron2.layers.get_norm`.
        """
        super().__init__()
        self.upsample = upsample
        blocks = []
        for i in range(num_convs):
            blocks.append(_conv_bn_relu(in_channels if i == 0 else channels, channels, norm))
        self.blocks = nn.Sequential(*blocks)
        self.predictor = nn.Conv2d(channels if num_convs else in_channels, 1, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H * upsample, W * upsample)"""
        return self.predictor(self.blocks(_upsample(x, self.upsample)))


def resolve_norm(norm: str, device: str) -> str:
    """
    The norm to build for a model on ``device``: "SyncBN" on a CPU model becomes Detectron2's
    "naiveSyncBN". torch's SyncBatchNorm only runs on GPU tensors, so multi-process training on
    CPUs (gloo) would fail; NaiveSyncBN averages the same batch statistics over the processes with
    an all_reduce, which gloo supports. In a single process both are plain BatchNorm, with the
    same parameters and state-dict keys.
    """
    if norm == "SyncBN" and not str(device).startswith("cuda"):
        return "naiveSyncBN"
    return norm


def _subnet_args(cfg, input_shape):
    """The from_config arguments both branches share."""
    g = cfg.MODEL.GAUSSIAN
    return {
        "input_shape": input_shape,
        "subnet_channels": g.SUBNET_CHANNELS,
        "num_subnet_convs": g.NUM_SUBNET_CONVS,
        "out_stride": g.OUT_STRIDE,
        "norm": resolve_norm(g.NORM, cfg.MODEL.DEVICE),
    }


class GaussianLayerNetwork(nn.Module):
    """
    GLN: concatenates C2 with P3 brought to C2's stride, a gaussian layer B2 (conv-BN-ReLU), then
    the gaussian subnet.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: List[str] = ("res2", "p3"),
        layer_channels: int,
        subnet_channels: int,
        num_subnet_convs: int,
        out_stride: int,
        norm: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone's outputs; must hold ``in_features``.
            in_features: names of (C2, P3) in the backbone's outputs.
            layer_channels: output channels of the gaussian layer B2.
            subnet_channels, num_subnet_convs: see :class:`GaussianSubnet`.
            out_stride: stride of the predicted map.
            norm: normalization of the convs.
        """
        super().__init__()
        self.in_features = list(in_features)
        c2, p3 = (input_shape[f] for f in self.in_features)
        self.p3_scale = p3.stride / c2.stride
        self.layer = _conv_bn_relu(c2.channels + p3.channels, layer_channels, norm)
        self.subnet = GaussianSubnet(
            layer_channels,
            channels=subnet_channels,
            num_convs=num_subnet_convs,
            upsample=c2.stride / out_stride,
            norm=norm,
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        return dict(_subnet_args(cfg, input_shape), layer_channels=cfg.MODEL.GAUSSIAN.LAYER_CHANNELS)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: the backbone's outputs by name.
        Returns:
            (N, 1, H / out_stride, W / out_stride) predicted map for the (padded) input of H x W.
        """
        c2, p3 = (features[f] for f in self.in_features)
        x = torch.cat([c2, _upsample(p3, self.p3_scale)], dim=1)
        return self.subnet(self.layer(x))


class GaussianDecoderNetwork(nn.Module):
    """
    GDN: a UNet decoder over the bottom-up features. Block B5 reads C5; every later block reads the
    previous block's output, upsampled 2x, concatenated with its skip connection (C4, C3, C2).
    Then the gaussian subnet.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: List[str] = ("res2", "res3", "res4", "res5"),
        decoder_channels: List[int],
        subnet_channels: int,
        num_subnet_convs: int,
        out_stride: int,
        norm: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone's outputs; must hold ``in_features``.
            in_features: names of C2..C5, finest first.
            decoder_channels: output channels of blocks B5, B4, B3, B2.
            subnet_channels, num_subnet_convs: see :class:`GaussianSubnet`.
            out_stride: stride of the predicted map.
            norm: normalization of the convs.
        """
        super().__init__()
        if len(decoder_channels) != len(in_features):
            raise ValueError(
                f"{len(decoder_channels)} decoder channels for {len(in_features)} features"
            )
        # Coarsest first: B5 over C5, then B4 over up(B5) + C4, ...
        self.in_features = list(in_features)[::-1]
        shapes = [input_shape[f] for f in self.in_features]
        blocks, prev = [], 0
        for shape, channels in zip(shapes, decoder_channels):
            blocks.append(_conv_bn_relu(prev + shape.channels, channels, norm))
            prev = channels
        self.blocks = nn.ModuleList(blocks)
        self.subnet = GaussianSubnet(
            prev,
            channels=subnet_channels,
            num_convs=num_subnet_convs,
            upsample=shapes[-1].stride / out_stride,
            norm=norm,
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        return dict(
            _subnet_args(cfg, input_shape),
            decoder_channels=list(cfg.MODEL.GAUSSIAN.DECODER_CHANNELS),
        )

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: the backbone's outputs by name.
        Returns:
            (N, 1, H / out_stride, W / out_stride) predicted map for the (padded) input of H x W.
        """
        x = None
        for name, block in zip(self.in_features, self.blocks):
            skip = features[name]
            if x is not None:
                x = torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                             align_corners=False), skip], dim=1)
            else:
                x = skip
            x = block(x)
        return self.subnet(x)


_ARCHITECTURES = {"layer": GaussianLayerNetwork, "decoder": GaussianDecoderNetwork}


def build_gaussian_branch(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """
    Builds the branch named by cfg.MODEL.GAUSSIAN.ARCH ("layer" or "decoder").
    """
    arch = cfg.MODEL.GAUSSIAN.ARCH
    if arch not in _ARCHITECTURES:
        raise ValueError(
            f"MODEL.GAUSSIAN.ARCH must be one of {sorted(_ARCHITECTURES)}, got {arch!r}"
        )
    return _ARCHITECTURES[arch](cfg, input_shape)
