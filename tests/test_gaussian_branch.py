"""
The Gaussian branches' output on a fixed input, against a forward pass written out here with
torch.nn.functional from the paper's description (GLN: concat(C2, up(P3)) -> B2 -> subnet;
GDN: a UNet decoder C5 -> B5 -> B4 -> B3 -> B2 -> subnet; subnet: up to the output stride,
conv-BN-ReLU blocks, 1x1 conv to one channel).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from gaussian_retina.modeling.gaussian_branch import (
    GaussianDecoderNetwork,
    GaussianLayerNetwork,
    build_gaussian_branch,
    resolve_norm,
)

from common import get_config


def _randomize(module, seed):
    """Every parameter and BN statistic set to seeded values far from their initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return module.eval()


def _conv_bn_relu(x, conv):
    """3x3 conv, padding 1, no bias, then BN with running statistics, then ReLU."""
    bn = conv.norm
    y = F.conv2d(x, conv.weight, None, padding=1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    y = (y - bn.running_mean[None, :, None, None]) * scale[None, :, None, None]
    return torch.clamp(y + bn.bias[None, :, None, None], min=0)


def _up2(x):
    """Bilinear 2x upsampling with half-pixel centres, written out: each output pixel at
    (i + 0.5) / 2 - 0.5 in input coordinates, edges clamped."""
    n, c, h, w = x.shape

    def axis(size):
        pos = (torch.arange(2 * size, dtype=torch.float64) + 0.5) / 2 - 0.5
        pos = pos.clamp(min=0)
        lo = pos.floor().long().clamp(max=size - 1)
        hi = (lo + 1).clamp(max=size - 1)
        return lo, hi, (pos - lo).float()

    ylo, yhi, fy = axis(h)
    xlo, xhi, fx = axis(w)
    rows = x[:, :, ylo] * (1 - fy)[:, None] + x[:, :, yhi] * fy[:, None]
    return rows[..., xlo] * (1 - fx) + rows[..., xhi] * fx


def _subnet(x, subnet, num_convs):
    x = _up2(x)
    for i in range(num_convs):
        x = _conv_bn_relu(x, subnet.blocks[i])
    return F.conv2d(x, subnet.predictor.weight, subnet.predictor.bias)


SHAPES = {
    "res2": ShapeSpec(channels=6, stride=4),
    "res3": ShapeSpec(channels=7, stride=8),
    "res4": ShapeSpec(channels=8, stride=16),
    "res5": ShapeSpec(channels=9, stride=32),
    "p3": ShapeSpec(channels=5, stride=8),
}


def _features(seed=0, h=64, w=96):
    g = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(2, s.channels, h // s.stride, w // s.stride, generator=g)
        for name, s in SHAPES.items()
    }


def test_upsampling_reference_matches_the_definition():
    # The reference's bilinear 2x against a hand-worked 1-D case: input [0, 4] gives
    # [0, 1, 3, 4] (outputs at input positions -0.25 -> 0, 0.25, 0.75, 1.25 -> 1).
    x = torch.tensor([0.0, 4.0]).reshape(1, 1, 1, 2)
    assert _up2(x)[0, 0, 0].tolist() == [0.0, 1.0, 3.0, 4.0]


def test_layer_network_output_on_a_fixed_input():
    branch = GaussianLayerNetwork(
        input_shape=SHAPES, layer_channels=4, subnet_channels=3, num_subnet_convs=2,
        out_stride=2, norm="BN",
    )
    _randomize(branch, seed=1)
    features = _features()
    with torch.no_grad():
        out = branch(features)
        x = torch.cat([features["res2"], _up2(features["p3"])], dim=1)
        expected = _subnet(_conv_bn_relu(x, branch.layer), branch.subnet, 2)
    assert out.shape == (2, 1, 32, 48)  # stride 2 over the 64 x 96 input
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_decoder_network_output_on_a_fixed_input():
    branch = GaussianDecoderNetwork(
        input_shape=SHAPES, decoder_channels=[5, 4, 4, 3], subnet_channels=3,
        num_subnet_convs=1, out_stride=2, norm="BN",
    )
    _randomize(branch, seed=2)
    features = _features(seed=3)
    with torch.no_grad():
        out = branch(features)
        x = _conv_bn_relu(features["res5"], branch.blocks[0])
        for name, block in zip(["res4", "res3", "res2"], branch.blocks[1:]):
            x = _conv_bn_relu(torch.cat([_up2(x), features[name]], dim=1), block)
        expected = _subnet(x, branch.subnet, 1)
    assert out.shape == (2, 1, 32, 48)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_decoder_follows_odd_skip_sizes():
    # An input that is not a multiple of 32: each block is resized to its skip's size.
    branch = _randomize(GaussianDecoderNetwork(
        input_shape=SHAPES, decoder_channels=[2, 2, 2, 2], subnet_channels=2,
        num_subnet_convs=1, out_stride=4, norm="BN",
    ), seed=4)
    g = torch.Generator().manual_seed(5)
    sizes = {"res2": (13, 19), "res3": (7, 10), "res4": (4, 5), "res5": (2, 3)}
    features = {n: torch.randn(1, SHAPES[n].channels, *hw, generator=g) for n, hw in sizes.items()}
    with torch.no_grad():
        out = branch(features)
    assert out.shape == (1, 1, 13, 19)  # out_stride 4 = C2's stride: no upsampling


def test_initial_map_is_flat_and_blocks_are_msra_initialised():
    torch.manual_seed(0)
    branch = GaussianLayerNetwork(
        input_shape=SHAPES, layer_channels=64, subnet_channels=64, num_subnet_convs=2,
        out_stride=2, norm="BN",
    )
    predictor = branch.subnet.predictor
    assert predictor.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert torch.all(predictor.bias == 0)
    for conv in [branch.layer, *branch.subnet.blocks]:
        assert conv.bias is None, "a conv followed by BN has no bias"
        fan_out = conv.weight.shape[0] * 9
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.15)
    # Without a norm the convs carry a bias, zero at first.
    plain = GaussianLayerNetwork(
        input_shape=SHAPES, layer_channels=4, subnet_channels=4, num_subnet_convs=1,
        out_stride=2, norm="",
    )
    assert plain.layer.norm is None and torch.all(plain.layer.bias == 0)


@pytest.mark.parametrize("arch, cls", [("layer", GaussianLayerNetwork),
                                       ("decoder", GaussianDecoderNetwork)])
def test_built_from_the_config(arch, cls):
    cfg = get_config(
        "synthetic/gln_R18.yaml", "MODEL.GAUSSIAN.ARCH", arch, "MODEL.GAUSSIAN.NORM", "BN",
        "MODEL.GAUSSIAN.SUBNET_CHANNELS", 8, "MODEL.GAUSSIAN.NUM_SUBNET_CONVS", 3,
        "MODEL.GAUSSIAN.LAYER_CHANNELS", 5, "MODEL.GAUSSIAN.DECODER_CHANNELS", [9, 8, 7, 6],
    )
    branch = build_gaussian_branch(cfg, SHAPES)
    assert type(branch) is cls
    assert len(branch.subnet.blocks) == 3
    assert [b.weight.shape[0] for b in branch.subnet.blocks] == [8, 8, 8]
    assert branch.subnet.predictor.weight.shape == (1, 8, 1, 1)
    if arch == "layer":
        assert branch.layer.weight.shape[:2] == (5, 6 + 5)  # C2 and P3 concatenated
    else:
        assert [b.weight.shape[:2] for b in branch.blocks] == [(9, 9), (8, 9 + 8), (7, 8 + 7),
                                                               (6, 7 + 6)]
    cfg.MODEL.GAUSSIAN.ARCH = "unet"
    with pytest.raises(ValueError, match="MODEL.GAUSSIAN.ARCH"):
        build_gaussian_branch(cfg, SHAPES)


def test_decoder_channels_must_match_the_features():
    with pytest.raises(ValueError, match="3 decoder channels for 4 features"):
        GaussianDecoderNetwork(input_shape=SHAPES, decoder_channels=[4, 4, 4], subnet_channels=2,
                               num_subnet_convs=1, out_stride=2, norm="BN")


def test_sync_bn_becomes_naive_sync_bn_off_the_gpu():
    assert resolve_norm("SyncBN", "cpu") == "naiveSyncBN"
    assert resolve_norm("SyncBN", "cuda:1") == "SyncBN"
    assert resolve_norm("BN", "cpu") == "BN"
