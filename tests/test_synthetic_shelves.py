"""
The procedural dense-shelf dataset: determinism, box sanity, touching neighbours, COCO loading,
registration, lazy generation and the atomic cache. Tiny splits only, generated into tmp dirs.
"""
import glob
import hashlib
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode
from pycocotools.coco import COCO

import gaussian_retina.shelves.synthetic_shelves as ss
from gaussian_retina.shelves.synthetic_scene import ShelfSceneParams, render_shelf_scene

NUM = 4


def _read_split(json_file):
    with open(json_file) as f:
        coco = json.load(f)
    image_dir = os.path.join(os.path.dirname(json_file), "images")
    images = {
        im["file_name"]: open(os.path.join(image_dir, im["file_name"]), "rb").read()
        for im in coco["images"]
    }
    return coco, images


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shelves"))
    json_file = ss.generate_synthetic_shelves(root, "train", num_images=NUM, seed=0)
    return json_file, *_read_split(json_file)


def test_deterministic_from_seed(tmp_path, tiny_split):
    _, coco, images = tiny_split
    again = ss.generate_synthetic_shelves(str(tmp_path / "again"), "train", num_images=NUM, seed=0)
    coco2, images2 = _read_split(again)
    assert coco2 == coco
    assert images2 == images

    other = ss.generate_synthetic_shelves(str(tmp_path / "other"), "train", num_images=NUM, seed=1)
    coco3, images3 = _read_split(other)
    assert coco3["annotations"] != coco["annotations"]
    assert all(images3[name] != images[name] for name in images)

    # Same seed, other split: other images too.
    val = ss.generate_synthetic_shelves(str(tmp_path / "other"), "val", num_images=NUM, seed=0)
    assert all(_read_split(val)[1][name] != images[name] for name in images)


def test_image_is_independent_of_split_size(tmp_path, tiny_split):
    _, coco, images = tiny_split
    small = ss.generate_synthetic_shelves(str(tmp_path), "train", num_images=2, seed=0)
    coco2, images2 = _read_split(small)
    assert images2 == {name: images[name] for name in images2}
    assert coco2["annotations"] == [a for a in coco["annotations"] if a["image_id"] <= 2]


def test_boxes_inside_image_and_not_degenerate(tiny_split):
    _, coco, _ = tiny_split
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert [im["id"] for im in coco["images"]] == list(range(1, NUM + 1))
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=NUM + 1)[1:]
    params = ShelfSceneParams()
    assert per_image.min() >= params.min_objects and per_image.max() <= params.max_objects
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        assert w >= 2 and h >= 2, a
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, a
        assert a["area"] == w * h and a["category_id"] == 1 and a["iscrowd"] == 0


def test_neighbours_touch(tiny_split):
    """Most products touch a neighbour edge to edge: gap <= 1 px, mostly overlapping sides."""
    _, coco, _ = tiny_split
    touching = 0
    for image_id in range(1, NUM + 1):
        b = np.array([a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id], float)
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        # Horizontal neighbours: j starts where i ends, and their vertical extents overlap.
        h_gap = np.abs(x1[None, :] - x2[:, None])
        v_overlap = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
        h_pairs = (h_gap <= 1) & (v_overlap > 0.5 * np.minimum(b[:, 3][:, None], b[:, 3][None]))
        # Vertical neighbours (stacked boxes).
        v_gap = np.abs(y1[None, :] - y2[:, None])
        h_overlap = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
        v_pairs = (v_gap <= 1) & (h_overlap > 0.5 * np.minimum(b[:, 2][:, None], b[:, 2][None]))
        has_neighbour = (h_pairs | h_pairs.T | v_pairs | v_pairs.T).any(axis=1)
        touching += int(has_neighbour.sum())
        assert h_pairs.sum() >= 0.3 * len(b), image_id
    assert touching >= 0.8 * len(coco["annotations"])


def test_partial_products_at_border_are_annotated():
    """Products cut by the border are kept (clipped) when at least half is visible."""
    lenient = ShelfSceneParams(min_objects=0, max_objects=10**6, min_visible_fraction=0.5)
    strict = ShelfSceneParams(min_objects=0, max_objects=10**6, min_visible_fraction=1.0)
    clipped = 0
    for seed in range(3):
        image, boxes = render_shelf_scene(np.random.default_rng(seed), lenient)
        _, full_only = render_shelf_scene(np.random.default_rng(seed), strict)
        h, w = image.shape[:2]
        kept = {tuple(b) for b in boxes.tolist()}
        assert {tuple(b) for b in full_only.tolist()} <= kept
        clipped += len(kept) - len(full_only)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert clipped > 0


def test_v1_scenes_are_unchanged():
    """
    The validation set is the project's yardstick. Scene
    parameters added since v1 must, at their v1 value, draw the same boxes and keep the cache
    folder; the pinned digest is of the first 8 validation scenes' boxes as v1 drew them.
    """
    assert os.path.basename(os.path.dirname(ss.synthetic_shelves_dir("r", "val"))) == (
        "v1-512x384-ce9c8856"
    )
    digest, count = hashlib.sha1(), 0
    for index in range(8):
        _, boxes = render_shelf_scene(ss._image_rng(0, "val", index))
        digest.update(boxes.astype(np.int64).tobytes())
        count += len(boxes)
    assert (digest.hexdigest(), count) == ("5fd82fdba3cacff723220e7b0c8707aa2136ffc7", 411)


def test_stocked_deep_rows_draw_unannotated_products_behind():
    from gaussian_retina.shelves.synthetic_scene import _sample_layout

    params = ShelfSceneParams(stock_depth_prob=1.0)
    behind = 0
    for seed in range(3):
        layout = _sample_layout(np.random.default_rng(seed), 512, 384, params)
        front = {(x, w): y for x, y, w, h, _, _ in layout["products"]}
        for x, y, w, h, key, _ in layout["behind"]:
            # Right behind a front product of the same design, showing above it, not below.
            assert (x, w) in front and y <= front[(x, w)]
            assert any(p[4] == key for p in layout["products"])
        behind += len(layout["behind"])
        # Only the front facings are boxes.
        assert len(layout["boxes"]) == len(layout["products"])
    assert behind > 0
    v1 = _sample_layout(np.random.default_rng(0), 512, 384, ShelfSceneParams())
    assert v1["behind"] == []


def test_pictures_go_on_flat_faces_and_differ_between_sprites():
    from gaussian_retina.shelves.synthetic_scene import (
        _PICTURE_KINDS,
        _render_product,
        _sample_layout,
    )

    params = ShelfSceneParams(picture_prob=1.0)
    pictured = 0
    for seed in range(3):
        layout = _sample_layout(np.random.default_rng(seed), 512, 384, params)
        for design, _, _ in layout["designs"].values():
            assert (design["picture"] is not None) == (design["kind"] in _PICTURE_KINDS)
            pictured += design["picture"] is not None
    assert pictured > 0
    design = next(
        d for d, _, _ in layout["designs"].values() if d["picture"] is not None and not d["band"]
    )
    top, height, margin = design["picture"]
    assert 0 < top and top + height < 1 and 0 <= margin < 0.5
    # Each sprite draws its own picture, so look-alikes differ there.
    rng = np.random.default_rng(0)
    a, _ = _render_product(rng, design, 40, 80)
    b, _ = _render_product(rng, design, 40, 80)
    rows = slice(int(80 * top) + 1, int(80 * (top + height)) - 1)
    assert np.abs(a[rows] - b[rows]).mean() > 5
    v1 = _sample_layout(np.random.default_rng(0), 512, 384, ShelfSceneParams())
    assert all(d["picture"] is None for d, _, _ in v1["designs"].values())


def test_coco_json_loads(tiny_split):
    json_file, coco, _ = tiny_split
    api = COCO(json_file)
    assert sorted(api.getImgIds()) == list(range(1, NUM + 1))
    assert api.loadCats(api.getCatIds()) == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert len(api.getAnnIds()) == len(coco["annotations"])

    # With a dataset name, load_coco_json maps category 1 to contiguous id 0.
    name = "_test_synthetic_shelves_tiny"
    dicts = load_coco_json(json_file, os.path.join(os.path.dirname(json_file), "images"), name)
    assert MetadataCatalog.get(name).thing_classes == ["object"]
    MetadataCatalog.remove(name)
    assert len(dicts) == NUM
    for d, im in zip(dicts, coco["images"]):
        assert os.path.isfile(d["file_name"])
        assert (d["image_id"], d["height"], d["width"]) == (im["id"], im["height"], im["width"])
        assert [a["category_id"] for a in d["annotations"]] == [0] * len(d["annotations"])
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in d["annotations"])
        own = [a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert own and [a["bbox"] for a in d["annotations"]] == own
    assert sum(len(d["annotations"]) for d in dicts) == len(coco["annotations"])


def test_predefined_splits_registered():
    for name in ("synthetic_shelves_train", "synthetic_shelves_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["object"]
        assert meta.evaluator_type == "coco"
        assert meta.json_file.endswith("annotations.json")
        # The stocked-deep and pictures twins have scenes, and so cache folders, of their own.
        for twin in ("_deep", "_pictures"):
            other = MetadataCatalog.get(name + twin)
            assert other.thing_classes == ["object"]
            assert os.path.dirname(os.path.dirname(other.json_file)) != os.path.dirname(
                os.path.dirname(meta.json_file)
            )
    # Registering again (as the package's __init__ may) is harmless.
    ss.register_synthetic_shelves(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


@pytest.fixture
def registered_tiny(tmp_path, monkeypatch):
    """Both splits registered under tmp_path, 3 images each; the default root restored after."""
    monkeypatch.setitem(ss._SPLIT_SIZES, "train", 3)
    monkeypatch.setitem(ss._SPLIT_SIZES, "val", 3)
    ss.register_synthetic_shelves(str(tmp_path))
    yield str(tmp_path)
    monkeypatch.undo()
    ss.register_synthetic_shelves(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


def test_lazy_generation_on_first_get(registered_tiny):
    meta = MetadataCatalog.get("synthetic_shelves_val")
    assert meta.json_file.startswith(registered_tiny)
    assert not os.path.exists(meta.json_file)  # registering generates nothing
    dicts = DatasetCatalog.get("synthetic_shelves_val")
    assert len(dicts) == 3 and os.path.isfile(meta.json_file)
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0}
    assert all(os.path.isfile(d["file_name"]) for d in dicts)
    assert not os.path.exists(MetadataCatalog.get("synthetic_shelves_train").json_file)


def test_cache_is_reused(tmp_path, monkeypatch):
    root = str(tmp_path)
    json_file = ss.generate_synthetic_shelves(root, "val", num_images=2)
    mtime = os.stat(json_file).st_mtime_ns

    def must_not_render(*args, **kwargs):
        raise AssertionError("regenerated a cached split")

    monkeypatch.setattr(ss, "render_shelf_scene", must_not_render)
    assert ss.generate_synthetic_shelves(root, "val", num_images=2) == json_file
    assert os.stat(json_file).st_mtime_ns == mtime
    assert len(ss.load_synthetic_shelves(root, "val", num_images=2)) == 2


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    root = str(tmp_path)
    calls = []

    def fail_on_second(rng, params):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return render_shelf_scene(rng, params)

    monkeypatch.setattr(ss, "render_shelf_scene", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        ss.generate_synthetic_shelves(root, "val", num_images=3)
    out_dir = ss.synthetic_shelves_dir(root, "val", num_images=3)
    assert not os.path.exists(out_dir)
    assert glob.glob(os.path.join(os.path.dirname(out_dir), ".tmp-*")) == []

    monkeypatch.setattr(ss, "render_shelf_scene", render_shelf_scene)
    json_file = ss.generate_synthetic_shelves(root, "val", num_images=3)
    assert len(COCO(json_file).getImgIds()) == 3


def test_losing_a_race_uses_the_winners_copy(tmp_path, monkeypatch):
    root = str(tmp_path)
    real_write = ss._write_split

    def another_process_finishes_first(out_dir, split, num_images, seed, params):
        monkeypatch.setattr(ss, "_write_split", real_write)
        winner = ss.generate_synthetic_shelves(root, split, num_images=num_images, seed=seed)
        with open(winner) as f:
            winner_text = f.read()
        result = real_write(out_dir, split, num_images, seed, params)
        captured.append((winner, winner_text))
        return result

    captured = []
    monkeypatch.setattr(ss, "_write_split", another_process_finishes_first)
    json_file = ss.generate_synthetic_shelves(root, "val", num_images=2)
    winner, winner_text = captured[0]
    assert json_file == winner
    with open(json_file) as f:
        assert f.read() == winner_text
    out_dir = os.path.dirname(json_file)
    assert glob.glob(os.path.join(os.path.dirname(out_dir), ".tmp-*")) == []


def test_unknown_split_needs_num_images(tmp_path):
    with pytest.raises(KeyError, match="num_images"):
        ss.generate_synthetic_shelves(str(tmp_path), "test")


def test_pregenerating_a_split_writes_it_where_loading_looks(tmp_path):
    """What tools/generate_synthetic_shelves.py does, through the package (tests need no tool)."""
    json_file = ss.generate_synthetic_shelves(str(tmp_path), "val", num_images=1)
    assert json_file == os.path.join(ss.synthetic_shelves_dir(str(tmp_path), "val", num_images=1),
                                     "annotations.json")
    assert os.path.isfile(json_file)
