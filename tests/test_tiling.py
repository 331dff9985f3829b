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


def _merge_photo(windows, per_tile, image_size, **kw):
    """
    per_tile: per window, a list of (x1, y1, x2, y2, score, class) in *photo* pixels; the
    merge gets them in each tile's pixels, with each detection's index as its extra value.
    Returns rows (x1, y1, x2, y2, score, class, extra) in the merge's order.
    """
    boxes, scores, classes, extra, k = [], [], [], [], 0
    for (x0, y0, _, _), dets in zip(windows, per_tile):
        d = torch.tensor(dets, dtype=torch.float32).reshape(-1, 6)
        boxes.append(d[:, :4] - torch.tensor([x0, y0, x0, y0], dtype=torch.float32))
        scores.append(d[:, 4])
        classes.append(d[:, 5].long())
        extra.append(torch.arange(k, k + len(d)))
        k += len(d)
    b, s, c, ex = merge_tile_detections(boxes, scores, classes, windows, image_size, extra=extra, **kw)
    return [
        (*[round(v, 3) for v in bb], round(float(ss), 3), int(cc), int(ee))
        for bb, ss, cc, ee in zip(b.tolist(), s, c, ex)
    ]


# Two tiles stacked over a 200x100 photo (H, W), sharing y in [80, 120].
STACKED = [(0, 0, 100, 120), (0, 80, 100, 200)]


def test_merge_fuses_a_product_cut_by_a_horizontal_seam():
    # The product spans y 60-150: the top tile sees 60-120 (cut at its bottom edge), the bottom
    # tile 80-150 (cut at its top edge). The union keeps the best piece's score and extra.
    out = _merge_photo(
        STACKED, [[(10, 60, 40, 120, 0.5, 0)], [(11, 80, 41, 150, 0.7, 0)]], (200, 100)
    )
    assert out == [(10, 60, 41, 150, 0.7, 0, 1)]


def test_merge_never_fuses_or_suppresses_across_classes():
    # The same region seen as class 0 cut by the seam and as class 1 whole: nothing joins them.
    out = _merge_photo(
        STACKED, [[(10, 90, 40, 120, 0.9, 0)], [(10, 90, 40, 130, 0.8, 1)]], (200, 100)
    )
    assert out == [(10, 90, 40, 120, 0.9, 0, 0), (10, 90, 40, 130, 0.8, 1, 1)]


def test_merge_joins_pieces_only_from_the_seam_iou_up():
    # Clipped to the common rows 80-120, the pieces are x 10-40 and x 10+d-40+d: IoU
    # (30 - d) / (30 + d). d = 10 gives exactly 0.5, joined; d = 11 gives 0.46, kept apart.
    for d, joined in ((10, True), (11, False)):
        out = _merge_photo(
            STACKED,
            [[(10, 60, 40, 120, 0.6, 0)], [(10 + d, 80, 40 + d, 150, 0.9, 0)]],
            (200, 100),
            nms_thresh=0.99,
        )
        if joined:
            assert out == [(10, 60, 40 + d, 150, 0.9, 0, 1)]
        else:
            assert out == [(10 + d, 80, 40 + d, 150, 0.9, 0, 1), (10, 60, 40, 120, 0.6, 0, 0)]
    out = _merge_photo(
        STACKED, [[(10, 60, 40, 120, 0.6, 0)], [(20, 80, 50, 150, 0.9, 0)]], (200, 100),
        seam_iou=0.51, nms_thresh=0.99,
    )
    assert len(out) == 2


def test_each_tile_has_its_own_cut_margin():
    # Tile 0's box stops 5 px short of its inner edge (x = 120), tile 1 sees the product whole,
    # 20 px from its own inner edge (x = 80). With tile 0's margin 6 its box is a piece and
    # goes; with 4 it is whole, and NMS keeps both (their IoU, 15 / 40, is under 0.5). A margin
    # of 25 for tile 1 makes its box a piece too: two pieces, fused into their union.
    windows = [(0, 0, 120, 100), (80, 0, 200, 100)]
    dets = [[(100, 10, 115, 60, 0.9, 0)], [(100, 10, 140, 60, 0.8, 0)]]
    assert _merge_photo(windows, dets, (100, 200), edge_margin=[6.0, 0.0]) == [
        (100, 10, 140, 60, 0.8, 0, 1)
    ]
    assert _merge_photo(windows, dets, (100, 200), edge_margin=[4.0, 0.0]) == [
        (100, 10, 115, 60, 0.9, 0, 0),
        (100, 10, 140, 60, 0.8, 0, 1),
    ]
    assert _merge_photo(windows, dets, (100, 200), edge_margin=[6.0, 25.0]) == [
        (100, 10, 140, 60, 0.9, 0, 0)
    ]


def test_tiles_that_do_not_overlap_never_join_their_boxes():
    # Side by side with no common region: a box at each side of x = 100 is a piece of its tile
    # (both edges are inner), but the product halves cannot be matched, and both stay.
    windows = [(0, 0, 100, 100), (100, 0, 200, 100)]
    out = _merge_photo(
        windows, [[(80, 10, 100, 60, 0.9, 0)], [(100, 10, 130, 60, 0.8, 0)]], (100, 200)
    )
    assert out == [(80, 10, 100, 60, 0.9, 0, 0), (100, 10, 130, 60, 0.8, 0, 1)]


def test_whole_boxes_of_two_tiles_meet_only_in_nms():
    # Neither box touches an inner edge: no group, so the NMS threshold alone decides.
    windows = [(0, 0, 120, 100), (80, 0, 200, 100)]
    dets = [[(85, 10, 105, 60, 0.7, 0)], [(90, 10, 110, 60, 0.9, 0)]]  # IoU 15 / 25 = 0.6
    assert _merge_photo(windows, dets, (100, 200)) == [(90, 10, 110, 60, 0.9, 0, 1)]
    assert _merge_photo(windows, dets, (100, 200), nms_thresh=0.7) == [
        (90, 10, 110, 60, 0.9, 0, 1),
        (85, 10, 105, 60, 0.7, 0, 0),
    ]


def test_one_tile_keeps_its_detections_in_score_order_without_nms():
    # A single pass: the model's own NMS already ran; overlapping boxes of equal score keep
    # their order.
    window = [(0, 0, 100, 100)]
    dets = [[(10, 10, 50, 50, 0.5, 0), (11, 10, 51, 50, 0.9, 0), (10, 11, 50, 51, 0.5, 0)]]
    assert _merge_photo(window, dets, (100, 100)) == [
        (11, 10, 51, 50, 0.9, 0, 1),
        (10, 10, 50, 50, 0.5, 0, 0),
        (10, 11, 50, 51, 0.5, 0, 2),
    ]


def test_a_product_seen_whole_twice_and_cut_once_comes_out_once():
    # Three tiles in a row over 100x300, overlaps 40 px: x 0-120, 80-220, 180-300. A product at
    # x 90-115 lies whole in tiles 0 and 1 (tile 2 does not reach it): NMS keeps the better. A
    # second product, x 100-140, is cut by tile 0's edge at 120 and whole in tile 1: the piece
    # goes, though it scores higher.
    windows = [(0, 0, 120, 100), (80, 0, 220, 100), (180, 0, 300, 100)]
    dets = [
        [(90, 10, 115, 60, 0.6, 0), (100, 70, 120, 95, 0.5, 0)],
        [(91, 10, 116, 60, 0.8, 0), (100, 70, 140, 95, 0.4, 0)],
        [],
    ]
    assert _merge_photo(windows, dets, (100, 300)) == [
        (91, 10, 116, 60, 0.8, 0, 2),
        (100, 70, 140, 95, 0.4, 0, 3),
    ]


def test_cut_margin_includes_its_boundary():
    # Tile 1's box starts exactly the margin (2 px) inside its inner edge at y = 80: a piece,
    # fused with the top tile's piece; 2.5 px inside it is whole, and stands alone.
    for top, fused in ((82.0, True), (82.5, False)):
        out = _merge_photo(
            STACKED, [[(10, 60, 40, 120, 0.6, 0)], [(10, top, 40, 150, 0.9, 0)]], (200, 100)
        )
        assert out == ([(10, 60, 40, 150, 0.9, 0, 1)] if fused else [(10, top, 40, 150, 0.9, 0, 1)])


@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_boxes_at_any_photo_border_are_whole(side):
    # A 2x2 grid over 200x200, tiles of 120: a product on the photo's border inside the overlap
    # of the two tiles along that border, seen whole by both, slightly apart. Neither box is a
    # piece, so NMS keeps the better one rather than fusing the two into their union.
    windows = fixed_tile_grid((200, 200), (120, 120), (40, 40)).windows
    a, b = (0, 90, 30, 110), (0, 91, 30, 111)  # on the left border, across the rows' overlap
    turn = {
        "left": lambda x1, y1, x2, y2: (x1, y1, x2, y2),
        "top": lambda x1, y1, x2, y2: (y1, x1, y2, x2),
        "right": lambda x1, y1, x2, y2: (200 - x2, y1, 200 - x1, y2),
        "bottom": lambda x1, y1, x2, y2: (y1, 200 - x2, y2, 200 - x1),
    }[side]
    a, b = turn(*a), turn(*b)
    def holds(w, box):
        return box[0] >= w[0] and box[1] >= w[1] and box[2] <= w[2] and box[3] <= w[3]

    both = [t for t, w in enumerate(windows) if holds(w, a) and holds(w, b)]
    assert len(both) == 2  # the two tiles along that border
    per_tile = [[] for _ in windows]
    per_tile[both[0]], per_tile[both[1]] = [(*a, 0.6, 0)], [(*b, 0.9, 0)]
    out = _merge_photo(windows, per_tile, (200, 200))
    assert [o[:5] for o in out] == [(*map(float, b), 0.9)]


def test_single_pass_scale_of_a_square_photo_is_its_short_side():
    assert single_pass_scale((1000, 1000), (192, 256)) == pytest.approx(0.192)


def test_auto_grid_of_one_pass_knows_the_photo():
    one = auto_tile_grid((3000, 4000), input_size=(192, 256), product_side=None, train_product_side=17.6)
    assert one.image_size == (3000, 4000) and one.num_tiles == 1


def test_fixed_grid_overlaps_each_axis_by_its_own_amount():
    grid = fixed_tile_grid((350, 300), (200, 200), (100, 50))  # (down, across)
    # Down, ceil((350 - 100) / (200 - 100)) = 3 rows; across, ceil((300 - 50) / 150) = 2 columns.
    assert sorted({w[1] for w in grid.windows}) == [0, 75, 150]
    assert sorted({w[0] for w in grid.windows}) == [0, 100]
    grid = fixed_tile_grid((300, 500), (200, 200), (100, 50))
    assert sorted({w[0] for w in grid.windows}) == [0, 150, 300]  # 3 across, 50 px apart at least
    # A zero overlap abuts the tiles; an overlap of a whole tile or more, down, is cut to one
    # pixel less: the rows still advance.
    assert fixed_tile_grid((200, 200), (100, 100), (0, 0)).windows == (
        (0, 0, 100, 100), (100, 0, 200, 100), (0, 100, 100, 200), (100, 100, 200, 200)
    )
    rows = fixed_tile_grid((250, 100), (100, 100), (500, 0))
    assert [w[1] for w in rows.windows] == [round(i * 150 / (len(rows.windows) - 1)) for i in range(len(rows.windows))]
    assert len(rows.windows) == 150 + 1


def test_merge_clips_boxes_past_the_right_border():
    b, _, _, _ = merge_tile_detections(
        [torch.tensor([[90.0, 10, 130, 40]])], [torch.tensor([0.9])], [torch.zeros(1, dtype=torch.long)],
        [(0, 0, 120, 100)], (100, 120),
    )
    assert b.tolist() == [[90, 10, 120, 40]]


def test_a_tile_starting_one_pixel_in_has_an_inner_edge():
    # Tiles x 0-120 and 1-121 over a 121-px-wide photo (and the same down): a product at 0-30
    # touches the photo's border, whole in the first tile; the second tile cuts it at 1, so its
    # box is a piece and goes, though it scores higher.
    out = _merge_photo(
        [(0, 0, 120, 100), (1, 0, 121, 100)], [[(0, 10, 30, 60, 0.6, 0)], [(1, 10, 30, 60, 0.9, 0)]], (100, 121)
    )
    assert out == [(0, 10, 30, 60, 0.6, 0, 0)]
    out = _merge_photo(
        [(0, 0, 100, 120), (0, 1, 100, 121)], [[(10, 0, 60, 30, 0.6, 0)], [(10, 1, 60, 30, 0.9, 0)]], (121, 100)
    )
    assert out == [(10, 0, 60, 30, 0.6, 0, 0)]


@pytest.mark.parametrize("side", ["left", "right", "bottom"])
def test_cut_margin_includes_its_boundary_on_every_side(side):
    # Side by side (x 0-120 and 80-200) or stacked (y 0-120 and 80-200): one tile's box stops
    # exactly the margin (2 px) inside that tile's inner edge, the other tile's box is cut at its
    # own edge: two pieces of one product, fused.
    if side == "left":  # tile 1's left edge at x = 80
        windows, size = [(0, 0, 120, 100), (80, 0, 200, 100)], (100, 200)
        dets = [[(60, 10, 120, 60, 0.6, 0)], [(82, 10, 150, 60, 0.9, 0)]]
        fused = (60, 10, 150, 60)
    elif side == "right":  # tile 0's right edge at x = 120
        windows, size = [(0, 0, 120, 100), (80, 0, 200, 100)], (100, 200)
        dets = [[(60, 10, 118, 60, 0.9, 0)], [(80, 10, 150, 60, 0.6, 0)]]
        fused = (60, 10, 150, 60)
    else:  # tile 0's bottom edge at y = 120
        windows, size = STACKED, (200, 100)
        dets = [[(10, 60, 40, 118, 0.9, 0)], [(10, 80, 40, 150, 0.6, 0)]]
        fused = (10, 60, 40, 150)
    out = _merge_photo(windows, dets, size)
    assert [o[:4] for o in out] == [fused]


def test_every_group_is_merged_whatever_the_others_are():
    # Two products on the seam of two side-by-side tiles (x 0-120, 80-200): product P seen whole
    # by tile 1 and cut by tile 0; product Q, wider than the overlap, cut by both. Plus a product
    # R far from the seam. P comes out as tile 1's box, Q as the union of its halves, R as is.
    out = _merge_photo(
        [(0, 0, 120, 100), (80, 0, 200, 100)],
        [
            [(100, 5, 120, 40, 0.9, 0), (60, 50, 120, 95, 0.5, 0), (5, 5, 30, 30, 0.7, 0)],
            [(100, 5, 140, 40, 0.8, 0), (80, 51, 150, 94, 0.6, 0)],
        ],
        (100, 200),
    )
    assert sorted(o[:4] for o in out) == sorted([(100, 5, 140, 40), (60, 50, 150, 95), (5, 5, 30, 30)])


@pytest.mark.parametrize("tile", [0, 1])
def test_boxes_of_one_tile_are_never_joined_with_each_other(tile):
    # In one tile, a piece cut at the inner edge and a smaller box inside the overlap: their
    # IoU is 0.35 (so the model's own NMS kept both), 0.7 inside the overlap. Only boxes of
    # different tiles are compared, so both stay.
    windows = [(0, 0, 120, 100), (80, 0, 200, 100)]
    piece, inner = ((40, 10, 120, 60, 0.9, 0), (82, 10, 110, 60, 0.8, 0)) if tile == 0 else (
        (80, 10, 160, 60, 0.9, 0), (90, 10, 118, 60, 0.8, 0)
    )
    dets = [[], []]
    dets[tile] = [piece, inner]
    out = _merge_photo(windows, dets, (100, 200))
    assert [o[:5] for o in out] == [tuple(map(float, piece[:5])), tuple(map(float, inner[:5]))]


def test_a_seam_between_rows_is_merged_past_tiles_that_do_not_overlap():
    # 2 rows x 3 columns over 200x300 (tiles of 120x120, overlap 40 in y, 30 in x): windows
    # are listed row by row, so tile 0 meets tile 3 below it after tile 1 (overlapping, with no
    # boxes in common) and tile 2 (not overlapping).
    grid = fixed_tile_grid((200, 300), (120, 120), (40, 30))
    assert grid.windows[:4] == ((0, 0, 120, 120), (90, 0, 210, 120), (180, 0, 300, 120), (0, 80, 120, 200))
    dets = [[] for _ in grid.windows]
    dets[0], dets[3] = [(10, 60, 40, 120, 0.6, 0)], [(11, 80, 41, 150, 0.8, 0)]
    out = _merge_photo(list(grid.windows), dets, (200, 300))
    assert [o[:4] for o in out] == [(10, 60, 41, 150)]


def test_overlapping_boxes_of_one_tile_are_left_to_nms():
    # In one tile, a piece cut at the inner edge (x = 120) and a box overlapping it by IoU 0.83
    # (a model whose own NMS threshold is above 0.5 may give both): they are not one product
    # seen by two tiles, so the piece is not dropped for the other box; NMS keeps the better.
    out = _merge_photo(
        [(0, 0, 120, 100), (80, 0, 200, 100)],
        [[(60, 10, 120, 60, 0.9, 0), (65, 10, 115, 60, 0.8, 0)], []],
        (100, 200),
    )
    assert out == [(60, 10, 120, 60, 0.9, 0, 0)]
