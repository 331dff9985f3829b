"""Tile grids: the windows, their description, the test resize's scale, auto's grid, the flag."""

import math

import torch

import pytest

from gaussian_retina.inference.tiling import (
    TileGrid,
    auto_tile_grid,
    fixed_tile_grid,
    merge_tile_detections,
    parse_tiling,
    single_pass_scale,
)


def test_fixed_grid_spreads_equal_tiles_over_the_photo():
    grid = fixed_tile_grid((3000, 4000), (1600, 2000), (300, 300))
    # Across: ceil((4000 - 300) / (2000 - 300)) = 3 tiles at 0, 1000, 2000; down: 3 at 0, 700, 1400.
    xs, ys = [0, 1000, 2000], [0, 700, 1400]
    assert grid.windows == tuple((x, y, x + 2000, y + 1600) for y in ys for x in xs)
    assert grid.tile_size == (1600, 2000) and grid.num_tiles == 9
    assert grid.describe() == "3x3 tiles of 2000x1600"
    # Exactly two tiles when they overlap by exactly the overlap asked for.
    assert fixed_tile_grid((100, 300), (100, 200), (0, 100)).windows == ((0, 0, 200, 100), (100, 0, 300, 100))


def test_fixed_grid_clips_tiles_and_overlap_to_the_photo():
    whole = fixed_tile_grid((300, 400), (500, 600), (50, 50))
    assert whole.windows == ((0, 0, 400, 300),)
    assert whole.describe() == "off (one pass over the whole photo)"
    # An overlap of a whole tile or more is cut to one pixel less: the tiles still advance.
    grid = fixed_tile_grid((100, 250), (100, 100), (0, 500))
    assert [w[0] for w in grid.windows] == [round(i * 150 / (len(grid.windows) - 1)) for i in range(len(grid.windows))]
    assert len(grid.windows) == 150 + 1
    assert TileGrid((10, 10), ((0, 0, 4, 6), (6, 0, 10, 6), (0, 4, 4, 10), (6, 4, 10, 10))).describe() == "2x2 tiles of 4x6"


def test_single_pass_scale_fits_the_photo_inside_the_input():
    assert single_pass_scale((3024, 4032), (192, 256)) == pytest.approx(192 / 3024)
    assert single_pass_scale((4032, 3024), (192, 256)) == pytest.approx(192 / 3024)  # portrait
    # A panorama is limited by its long side.
    assert single_pass_scale((1000, 8000), (192, 256)) == pytest.approx(256 / 8000)


def test_auto_grid_brings_products_to_the_training_scale():
    size, input_size = (3000, 4000), (192, 256)
    scale = single_pass_scale(size, input_size)  # 0.064
    grid = auto_tile_grid(size, input_size=input_size, product_side=100.0, train_product_side=17.6)
    gain = 17.6 / (100.0 * scale)
    overlap = 150  # 1.5 product sides
    tile = (math.ceil(3000 / gain) + overlap, math.ceil(4000 / gain) + overlap)
    assert grid == fixed_tile_grid(size, tile, (overlap, overlap))
    # Products near the training scale, or unknown: one pass.
    for side in (17.6 / scale, 17.6 / scale / 1.49, None, 0.0):
        one = auto_tile_grid(size, input_size=input_size, product_side=side, train_product_side=17.6)
        assert one.windows == ((0, 0, 4000, 3000),)
    assert auto_tile_grid(size, input_size=input_size, product_side=17.6 / scale / 1.5, train_product_side=17.6).num_tiles > 1
    # Tiny products: tiles never smaller than the input (no upsampling beyond the photo's pixels).
    tiny = auto_tile_grid(size, input_size=input_size, product_side=1.0, train_product_side=17.6)
    h, w = tiny.tile_size
    assert h >= 192 and w >= 256 and h <= 192 + 2 and w <= 256 + 2


def test_parse_tiling():
    assert parse_tiling(" Auto ") == "auto" and parse_tiling("OFF") == "off"
    assert parse_tiling("1024x768") == (768, 1024)
    assert parse_tiling("32x32") == (32, 32)
    for bad in ("31x64", "64x31", "1024", "axb", "10x10x10", ""):
        with pytest.raises(ValueError, match="tiling must be|at least 32x32"):
            parse_tiling(bad)
    with pytest.raises(ValueError, match="'31x64'"):
        parse_tiling("31x64")


def _tile(boxes, scores):
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32),
        torch.zeros(len(scores), dtype=torch.long),
    )


def test_merge_of_nothing_is_empty_and_typed():
    for tiles in ([], [_tile([], [])]):
        windows = [(0, 0, 100, 80)] * len(tiles)
        b, s, c, ex = merge_tile_detections(
            [t[0] for t in tiles], [t[1] for t in tiles], [t[2] for t in tiles], windows, (80, 100)
        )
        assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,) and ex is None
        assert b.dtype == torch.float32 and c.dtype == torch.long


def test_merge_clips_to_the_photo_caps_and_carries_extra():
    # One tile, the whole photo: boxes past its border are clipped, the best 300 kept by default.
    n = 320
    xs = torch.arange(n, dtype=torch.float32) * 10
    boxes = torch.stack([xs - 5, xs * 0 - 5, xs + 4, xs * 0 + 4000], 1)  # apart, tall past the border
    scores = torch.linspace(0.9, 0.1, n)
    extra = torch.arange(n)
    b, s, c, ex = merge_tile_detections(
        [boxes], [scores], [torch.zeros(n, dtype=torch.long)], [(0, 0, 3200, 3000)], (3000, 3200),
        extra=[extra],
    )
    assert len(b) == 300 and torch.equal(ex, extra[:300])
    assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= 3200).all()
    assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= 3000).all()
    assert b[0].tolist() == [0.0, 0.0, 4.0, 3000.0]
    assert torch.equal(s, scores[:300])
