"""
Inference on photos (gaussian_retina.inference, gaussian_retina.predict): writers, tile merge,
counts, the predictor on a random-init model, and the command on a folder with a broken photo.
"""

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from common import ROOT, SHARED_DATA, get_config
from detectron2.modeling import build_model

from gaussian_retina import render_gaussian_map
from gaussian_retina.inference import (
    CocoResultsWriter,
    TileGrid,
    ShelfPredictor,
    auto_tile_grid,
    calibrate_threshold,
    count_detections,
    count_map_mass,
    count_map_peaks,
    fixed_tile_grid,
    map_at_centres,
    probe_product_side,
    merge_tile_detections,
    parse_tiling,
    read_coco_results,
    read_detections_csv,
    write_detections_csv,
)
from gaussian_retina.predict import main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------
def test_csv_round_trip(tmp_path):
    boxes = np.array([[10.25, 20.5, 110.0, 220.75], [0.0, 0.0, 5.5, 6.0]])
    scores = np.array([0.91234, 0.05])
    path = tmp_path / "a.csv"
    write_detections_csv(path, "a.jpg", (480, 640), boxes, scores, ["object"], np.array([0, 0]))
    rows = read_detections_csv(path)
    assert [r["image_name"] for r in rows] == ["a.jpg", "a.jpg"]
    np.testing.assert_allclose([r["box"] for r in rows], boxes, atol=0.5)  # integer pixels
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-4)
    assert {(r["image_width"], r["image_height"], r["class"]) for r in rows} == {
        (640, 480, "object")
    }


def test_csv_reader_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a.jpg,1,2,3,4,object,10,10,0.5\na.jpg,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2"):
        read_detections_csv(path)


def test_coco_round_trip(tmp_path):
    writer = CocoResultsWriter(["object"])
    writer.add("a.jpg", (100, 200), [[1, 2, 11, 22]], [0.5])
    writer.add("b.jpg", (50, 60), np.zeros((0, 4)), [])
    writer.add("c.jpg", (50, 60), [[3, 4, 5, 6], [7, 8, 9, 10]], [0.9, 0.8])
    writer.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in data["images"]] == [
        (1, "a.jpg", 200, 100),
        (2, "b.jpg", 60, 50),
        (3, "c.jpg", 60, 50),
    ]
    assert data["annotations"][0]["bbox"] == [1, 2, 10, 20]  # XYWH
    back = read_coco_results(tmp_path / "r.json")
    assert back["b.jpg"] == []
    assert [d["bbox"] for d in back["c.jpg"]] == [[3, 4, 5, 6], [7, 8, 9, 10]]
    assert [d["score"] for d in back["c.jpg"]] == [0.9, 0.8]


# ------------------------------------------------------------------------------------------
# Tiles
# ------------------------------------------------------------------------------------------
# Two tiles side by side over a 100x200 photo, sharing x in [80, 120].
WINDOWS = [(0, 0, 120, 100), (80, 0, 200, 100)]


def _merge(per_tile, **kw):
    """per_tile: per window, a list of (x1, y1, x2, y2, score) in photo pixels."""
    boxes, scores, classes = [], [], []
    for (x0, y0, _, _), dets in zip(WINDOWS, per_tile):
        d = torch.tensor(dets, dtype=torch.float32).reshape(-1, 5)
        boxes.append(d[:, :4] - torch.tensor([x0, y0, x0, y0]))
        scores.append(d[:, 4])
        classes.append(torch.zeros(len(d), dtype=torch.long))
    b, s, _, _ = merge_tile_detections(boxes, scores, classes, WINDOWS, (100, 200), **kw)
    return b.tolist(), s.tolist()


def test_product_on_a_tile_border_comes_out_once_and_whole():
    # A product at x 100-140 is cut by tile 0's right edge (x=120) and lies wholly in tile 1.
    b, s = _merge([[(100, 10, 120, 60, 0.9)], [(100, 10, 140, 60, 0.8)]])
    assert b == [[100, 10, 140, 60]] and s == pytest.approx([0.8])


def test_product_in_the_overlap_seen_by_both_tiles_comes_out_once():
    b, s = _merge([[(90, 10, 110, 60, 0.7)], [(91, 10, 111, 61, 0.9)]])
    assert b == [[91, 10, 111, 61]] and s == pytest.approx([0.9])


def test_product_wider_than_the_overlap_is_fused_from_its_halves():
    # x 60-150: tile 0 sees 60-120 (cut), tile 1 sees 80-150 (cut); no tile holds it whole.
    b, s = _merge([[(60, 10, 120, 60, 0.6)], [(80, 11, 150, 59, 0.8)]])
    assert b == [[60, 10, 150, 60]] and s == pytest.approx([0.8])


def test_product_much_wider_than_the_overlap_is_fused_from_its_halves():
    # x 10-190, 4.5 times the 40-px overlap: each half overlaps the other by a fifth of itself.
    b, s = _merge([[(10, 10, 120, 60, 0.7)], [(80, 12, 190, 58, 0.6)]])
    assert b == [[10, 10, 190, 60]] and s == pytest.approx([0.7])


def test_product_at_a_tile_corner_comes_out_once():
    # A 2x2 grid over 200x200, tiles of 120 (overlap 40): windows start at 0 and 80 both ways.
    # The product at (60, 90, 150, 110) lies in the overlap of the two rows; each column's two
    # tiles see the same piece, cut at that column's inner edge, and no tile holds it whole.
    grid = fixed_tile_grid((200, 200), (120, 120), (40, 40))
    assert grid.windows == ((0, 0, 120, 120), (80, 0, 200, 120), (0, 80, 120, 200), (80, 80, 200, 200))
    product = torch.tensor([60.0, 90.0, 150.0, 110.0])
    boxes, scores, classes = [], [], []
    for k, (x0, y0, x1, y1) in enumerate(grid.windows):
        seen = torch.cat([product[:2].clamp(min=torch.tensor([x0, y0])), product[2:].clamp(max=torch.tensor([x1, y1]))])
        boxes.append((seen - torch.tensor([x0, y0, x0, y0])).reshape(1, 4))
        scores.append(torch.tensor([0.6 + 0.05 * k]))
        classes.append(torch.zeros(1, dtype=torch.long))
    b, s, _, _ = merge_tile_detections(boxes, scores, classes, grid.windows, (200, 200))
    assert b.tolist() == [[60, 90, 150, 110]] and s.tolist() == pytest.approx([0.75])


def test_cut_edge_margin_is_in_the_tiles_input_pixels():
    # Two tiles of 1000 px over 1800, each read at 100 px: 10 photo pixels per input pixel.
    # Tile 1 sees the product whole (900-1300); tile 0's box stops 8 photo pixels (under one
    # input pixel) short of its edge at 1000, as a detector's box edge may: it is the cut piece,
    # and goes. Their IoU (0.23) is far under the NMS's.
    windows = [(0, 0, 1000, 500), (800, 0, 1800, 500)]
    boxes = [torch.tensor([[900.0, 50, 992, 450]]), torch.tensor([[100.0, 50, 500, 450]])]
    scores = [torch.tensor([0.9]), torch.tensor([0.8])]
    classes = [torch.zeros(1, dtype=torch.long)] * 2
    b, s, _, _ = merge_tile_detections(
        boxes, scores, classes, windows, (500, 1800), edge_margin=[20.0, 20.0]
    )
    assert b.tolist() == [[900, 50, 1300, 450]] and s.tolist() == pytest.approx([0.8])


def test_piece_is_kept_when_no_tile_detected_the_whole_product():
    # Tile 1's window holds the product at 100-140 whole, but its detector missed it: the piece
    # tile 0 saw is all there is, and it stays.
    b, _ = _merge([[(100, 10, 120, 60, 0.9)], []])
    assert b == [[100, 10, 120, 60]]


def test_predictor_scales_the_cut_margin_with_each_tiles_resize(monkeypatch):
    import gaussian_retina.inference.predictor as predictor_module

    _, model = _random_model()
    image = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    seen = {}
    real = predictor_module.merge_tile_detections

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(predictor_module, "merge_tile_detections", spy)
    ShelfPredictor(model=model, test_size=(96, 128), tiling=(200, 240))([image])
    # Tiles of 200x240 read at 96x115: 200 / 96 photo pixels per input pixel, two of them.
    assert seen["edge_margin"] == pytest.approx([2 * 200 / 96] * 6)


def test_products_inside_one_tile_are_unaffected():
    dets0 = [(10, 10, 40, 60, 0.9), (42, 10, 70, 60, 0.85)]  # touching neighbours
    dets1 = [(150, 20, 190, 90, 0.3)]
    b, s = _merge([dets0, dets1])
    assert sorted(map(tuple, b)) == sorted(d[:4] for d in dets0 + dets1)
    assert sorted(s) == pytest.approx(sorted(d[4] for d in dets0 + dets1))


def test_cut_at_the_photo_border_is_not_a_tile_cut():
    # Touching the photo's own left edge: kept, even though tile 1 is elsewhere.
    b, _ = _merge([[(0, 10, 30, 60, 0.9)], []])
    assert b == [[0, 10, 30, 60]]


def test_detection_cap_applies_after_the_merge():
    g = torch.Generator().manual_seed(0)
    per_tile = []
    for x0 in (0, 120):  # 200 small separate products per tile, no overlap between tiles
        xs = torch.arange(200) % 20 * 4.0 + x0
        ys = torch.arange(200) // 20 * 9.0
        sc = torch.rand(200, generator=g)
        per_tile.append(
            [(x, y, x + 3, y + 8, s) for x, y, s in zip(xs.tolist(), ys.tolist(), sc.tolist())]
        )
    windows = [(0, 0, 80, 100), (120, 0, 200, 100)]
    boxes = [
        torch.tensor([d[:4] for d in t]) - torch.tensor([w[0], 0, w[0], 0])
        for t, w in zip(per_tile, windows)
    ]
    scores = [torch.tensor([d[4] for d in t]) for t in per_tile]
    classes = [torch.zeros(200, dtype=torch.long)] * 2
    b, s, _, _ = merge_tile_detections(
        boxes, scores, classes, windows, (100, 200), max_detections=300
    )
    assert len(b) == 300
    everything = torch.cat(scores)
    # The photo's best 300, however they split between the tiles (not 150 each).
    assert torch.equal(
        torch.sort(s, descending=True).values, torch.sort(everything, descending=True).values[:300]
    )
    per_tile_kept = (b[:, 0] >= 120).sum().item()
    assert per_tile_kept != 150


def test_grids_cover_the_photo_with_equal_tiles_and_overlap():
    grid = fixed_tile_grid((1000, 1500), (400, 500), (80, 100))
    covered = np.zeros((1000, 1500), bool)
    for x0, y0, x1, y1 in grid.windows:
        assert (y1 - y0, x1 - x0) == (400, 500) and x1 <= 1500 and y1 <= 1000
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({w[0] for w in grid.windows})
    assert all(b - a <= 500 - 100 for a, b in zip(xs, xs[1:]))
    # The auto rule, from the products' size: at the training scale (25 input pixels), one
    # pass; a 4000x3000 photo read at 256x192 shows 100-px products at 6.4 input pixels, so
    # tiles about 4 times smaller, overlapping by 1.5 products.
    kw = dict(input_size=(192, 256), train_product_side=25.0)
    assert auto_tile_grid((192, 256), product_side=25.0, **kw).num_tiles == 1
    assert auto_tile_grid((2448, 3264), product_side=500.0, **kw).num_tiles == 1  # tobacco-like
    assert auto_tile_grid((3000, 4000), product_side=None, **kw).num_tiles == 1  # nothing seen
    big = auto_tile_grid((3000, 4000), product_side=100.0, **kw)
    th, tw = big.tile_size
    assert (th, tw) == (math.ceil(3000 / 3.90625) + 150, math.ceil(4000 / 3.90625) + 150)
    assert big.num_tiles == 16 and big.windows[-1][2:] == (4000, 3000)
    # Never past the photo's own resolution: a 600x800 photo is tiled at most to the input size.
    small_photo = auto_tile_grid((600, 800), product_side=10.0, **kw)
    assert small_photo.tile_size == (min(600, 192 + 15), min(800, 256 + 15))
    assert parse_tiling("1024x768") == (768, 1024) and parse_tiling("OFF") == "off"
    with pytest.raises(ValueError, match="WxH"):
        parse_tiling("big")


# ------------------------------------------------------------------------------------------
# Counts
# ------------------------------------------------------------------------------------------
def test_counts_from_detections_and_from_a_rendered_map():
    assert count_detections([0.9, 0.5, 0.49, 0.1], 0.5) == 2
    thr, mae = calibrate_threshold([[0.9, 0.6, 0.2], [0.7, 0.3]], [2, 1], count_detections)
    assert mae == 0 and 0.3 < thr <= 0.6

    # A shelf of 6 x 4 touching products of 24 x 32 px, stride 2, as the training targets.
    boxes = np.array(
        [[10 + 24 * i, 8 + 32 * j, 34 + 24 * i, 40 + 32 * j] for i in range(6) for j in range(4)],
        np.float64,
    )
    gmap = render_gaussian_map(boxes, (150, 170), stride=2)
    assert count_map_peaks(gmap, 0.5) == 24
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert count_map_mass(gmap, 2, areas) == pytest.approx(24, rel=0.03)
    assert count_map_peaks(np.zeros((10, 10)), 0.5) == 0
    assert count_map_mass(gmap, 2, []) == 0


# ------------------------------------------------------------------------------------------
# The predictor and the command
# ------------------------------------------------------------------------------------------
def _random_model(max_size=256):
    cfg = get_config("synthetic/gln_R18.yaml", "INPUT.MAX_SIZE_TEST", max_size)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # A random head scores everything near the focal prior (0.01); let detections through.
    model.test_score_thresh = 0.0
    model.test_topk_candidates = 100  # a few hundred boxes per tile are enough to test with
    return cfg, model


def test_predictor_tiles_batches_and_caps():
    cfg, model = _random_model()
    image = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    pred = ShelfPredictor(
        model=model, test_size=(96, 128), tiling=(200, 240), batch_size=3, max_detections=50
    )
    out = pred([image, image[:100, :150]])
    assert [p.grid.num_tiles for p in out] == [6, 1]
    for p, (h, w) in zip(out, [(300, 500), (100, 150)]):
        assert p.image_size == (h, w) and len(p.scores) == 50
        assert (
            (p.boxes[:, 0::2] <= w).all() and (p.boxes[:, 1::2] <= h).all() and (p.boxes >= 0).all()
        )
        assert np.all(np.diff(p.scores) <= 0)
        # The stitched map covers the photo at the tiles' common stride.
        assert p.gaussian_map.shape == (np.ceil(h / p.map_stride), np.ceil(w / p.map_stride))

def test_rescoring_multiplies_each_score_by_the_map_at_its_centre():
    _, model = _random_model()
    image = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    kw = dict(model=model, test_size=(96, 128), tiling="off", max_detections=1000)
    plain = ShelfPredictor(rescore_alpha=0.0, **kw)([image])[0]
    rescored = ShelfPredictor(rescore_alpha=0.5, **kw)([image])[0]
    factor = np.maximum(
        map_at_centres(
            torch.as_tensor(plain.gaussian_map), torch.as_tensor(plain.boxes), plain.map_stride
        ).numpy(),
        1e-4,  # boxes the map puts at 0 keep their order (RESCORE_MAP_FLOOR)
    ) ** 0.5
    expected = {tuple(b): s * f for b, s, f in zip(plain.boxes.round(2), plain.scores, factor)}
    got = {tuple(b): s for b, s in zip(rescored.boxes.round(2), rescored.scores)}
    assert got.keys() == expected.keys() and len(got) > 50
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-5)
    assert len(set(np.round(factor, 3))) > 5  # the map differs between boxes: a real test


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real shelf data not found at {SHARED_DATA}")
def test_predict_command_skips_a_truncated_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = SHARED_DATA / "tobacco_shelves/images/C4_P04_N2_S2_1.JPG"  # the smallest, 3 MP
    shutil.copy(good, photos / "good.jpg")
    (photos / "cut.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    _, model = _random_model()
    weights = tmp_path / "random.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "out"
    # The command's log, read from its logger: the stream that Detectron2's setup_logger bound
    # on its first call may belong to an earlier test's capture.
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logging.getLogger("gaussian_retina").addHandler(handler)
    try:
        main(
            [
                "--config-file",
                str(ROOT / "configs/synthetic/gln_R18.yaml"),
                "--weights",
                str(weights),
                "--input",
                str(photos),
                "--output",
                str(out),
                "--device",
                "cpu",
                "--count-threshold",
                "0.01",
                "--conf",
                "0",
                "--peak-threshold",
                "0.5",
                "--tiling",
                "1600x1155",
                "--overlay",
                "--overlay-max-side",
                "256",
                "--no-progress",
                "--opts",
                "MODEL.RETINANET.SCORE_THRESH_TEST",
                "0.0",
            ]
        )
    finally:
        logging.getLogger("gaussian_retina").removeHandler(handler)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["photos_done"] == 1 and summary["photos_skipped"] == 1
    assert summary["skipped"][0]["file"].endswith("cut.jpg")
    assert (
        "cut.jpg" in summary["skipped"][0]["reason"]
        and "truncated" in summary["skipped"][0]["reason"]
    )
    printed = "\n".join(r.getMessage() for r in records)
    assert "cut.jpg: truncated JPEG" in printed and "1 skipped" in printed
    photo = summary["photos"][0]
    assert photo["image_size"] == [1155, 2816] and "tiles" in photo["tiling"]
    rows = read_detections_csv(out / "detections/good.csv")
    assert len(rows) == photo["detections"] > 0
    # Counted over every merged detection, not only the 300 written.
    assert photo["count"]["detections"] >= sum(r["score"] > 0.0101 for r in rows)  # 4 decimals
    assert set(read_coco_results(out / "coco_results.json")) == {"good.jpg"}
    assert (out / "overlays/good.png").stat().st_size > 0
    counts = (out / "counts.csv").read_text().splitlines()
    assert counts[0] == "image_name,detections,map_mass,map_peaks,products" and counts[1].startswith(
        "good.jpg,"
    )
    assert len(counts) == 2


def test_predictor_on_a_model_without_gaussian_branch():
    cfg = get_config("synthetic/retinanet_R18.yaml")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.test_score_thresh, model.test_topk_candidates = 0.0, 100
    image = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    pred = ShelfPredictor(model=model, test_size=(96, 128), tiling=(120, 160))
    assert pred.rescore_alpha == 0  # nothing to rescore with
    out = pred([image])[0]
    assert out.gaussian_map is None and out.grid.num_tiles == 6 and len(out.scores) > 0
    with pytest.raises(ValueError, match="Gaussian branch"):
        ShelfPredictor(model=model, tiling="off", rescore_alpha=0.5)


def test_auto_tiling_keeps_a_single_pass_that_sees_products_at_the_training_scale(monkeypatch):
    # Large products seen closer by the probe come out as parts of products, which look small:
    # where the single pass already finds products near the training scale, no probe is run.
    import gaussian_retina.inference.predictor as predictor_module

    _, model = _random_model()
    image = (np.random.default_rng(2).random((600, 800, 3)) * 255).astype(np.uint8)
    kw = dict(model=model, test_size=(96, 128), max_detections=1000)
    off = ShelfPredictor(tiling="off", **kw)([image])[0]
    side = probe_product_side(off) * predictor_module.single_pass_scale((600, 800), (96, 128))
    passes = []
    for train_side, probed in ((side, False), (side / 0.85, True)):
        predictor = ShelfPredictor(tiling="auto", train_product_side=train_side, **kw)
        run = predictor._predict
        monkeypatch.setattr(predictor, "_predict", lambda g, i, run=run: passes.append(g) or run(g, i))
        passes.clear()
        out = predictor([image])[0]
        assert (len(passes) > 1) == probed
        if not probed:
            np.testing.assert_array_equal(out.boxes, off.boxes)


def test_batching_does_not_change_results():
    # Photos of different sizes are not padded into one batch (GroupNorm would see the padding).
    _, model = _random_model()
    rng = np.random.default_rng(1)
    images = [
        (rng.random(s) * 255).astype(np.uint8)
        for s in [(120, 200, 3), (150, 150, 3), (120, 200, 3)]
    ]
    one = ShelfPredictor(model=model, test_size=(96, 128), tiling="off", batch_size=1)
    four = ShelfPredictor(model=model, test_size=(96, 128), tiling="off", batch_size=4)
    for a, b in zip(one(images), four(images)):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_auto_tiling_decides_from_a_probe_of_the_photos_centre():
    _, model = _random_model()
    image = (np.random.default_rng(2).random((600, 800, 3)) * 255).astype(np.uint8)
    kw = dict(model=model, test_size=(96, 128), max_detections=1000)
    fine = ShelfPredictor(tiling="auto", train_product_side=1000.0, **kw)
    # Read whole at 96x128, the photo shrinks 6.25 times; the probe is its centre, 3 times less.
    window = fine.probe_window((600, 800))
    assert window == (266, 200, 533, 400)
    assert fine.probe_window((140, 180)) is None  # shrunk 1.46 times: nothing to tile for
    probe = fine._predict([TileGrid((600, 800), (window,))], [image])[0]
    side = probe_product_side(probe)
    assert side is not None and side > 0
    # Products far smaller than the training scale: tiled, on the grid the probe's size gives.
    out = fine([image])[0]
    expected = auto_tile_grid(
        (600, 800), input_size=(96, 128), product_side=side, train_product_side=1000.0
    )
    assert out.grid == expected and out.grid.num_tiles > 1
    # Products at the training scale or larger: one pass, as "off".
    coarse = ShelfPredictor(tiling="auto", train_product_side=1.0, **kw)([image])[0]
    off = ShelfPredictor(tiling="off", **kw)([image])[0]
    assert coarse.grid.num_tiles == 1
    np.testing.assert_array_equal(coarse.boxes, off.boxes)
