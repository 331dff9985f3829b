import copy
import logging
import re
import sys
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.structures import Boxes, BoxMode, Instances

from gaussian_retina.config import add_gaussian_retina_config
from gaussian_retina.data import (
    GaussianDatasetMapper,
    GaussianMapRenderer,
    ScaleJitterCrop,
    ShelfDatasetMapper,
)
from gaussian_retina.data.image_reader import BadImageError
from gaussian_retina.data.mosaic import mosaic

from common import get_config

BOXES = [[20.0, 10.0, 60.0, 90.0], [60.0, 10.0, 110.0, 70.0], [150.0, 40.0, 196.0, 118.0]]


@pytest.fixture
def record(tmp_path):
    rng = np.random.default_rng(0)
    file_name = str(tmp_path / "shelf.png")
    cv2.imwrite(file_name, rng.integers(0, 256, (120, 200, 3), dtype=np.uint8))
    annotations = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in BOXES]
    return {
        "file_name": file_name,
        "height": 120,
        "width": 200,
        "image_id": 7,
        "annotations": annotations,
    }


def _mapper(augmentations, cls=GaussianDatasetMapper, **kwargs):
    if cls is GaussianDatasetMapper:
        kwargs.setdefault("gaussian_renderer", GaussianMapRenderer())
    return cls(True, augmentations=augmentations, image_format="BGR", **kwargs)


def test_map_is_rendered_from_the_boxes(record):
    out = _mapper([])(record)
    expected = GaussianMapRenderer()(np.array(BOXES), (120, 200))
    np.testing.assert_array_equal(out["gaussian_map"].numpy(), expected)
    assert out["gaussian_map"].dtype == torch.float32


def test_horizontal_flip_moves_the_map_with_the_boxes(record):
    plain = _mapper([])(record)
    flipped = _mapper([T.RandomFlip(prob=1.0, horizontal=True)])(record)
    boxes = flipped["instances"].gt_boxes.tensor.numpy()
    np.testing.assert_allclose(boxes[:, [2, 0]], 200 - np.array(BOXES)[:, [0, 2]])
    np.testing.assert_allclose(
        flipped["gaussian_map"].numpy(), plain["gaussian_map"].numpy()[:, ::-1], atol=1e-6
    )
    assert torch.equal(flipped["image"], plain["image"].flip(-1))


def test_resize_moves_the_map_with_the_boxes(record):
    resized = _mapper([T.Resize((240, 400))])(record)
    assert resized["image"].shape == (3, 240, 400)
    assert resized["gaussian_map"].shape == (120, 200)
    # Twice the image at stride 2 is the original image at stride 1: the same map, exactly.
    at_stride_1 = GaussianMapRenderer(stride=1)(np.array(BOXES), (120, 200))
    np.testing.assert_allclose(resized["gaussian_map"].numpy(), at_stride_1, atol=1e-6)


def test_crop_renders_the_cut_boxes(record):
    out = _mapper([T.CropTransform(100, 0, 100, 120)])(record)
    boxes = out["instances"].gt_boxes.tensor.numpy()
    # The box at x 60-110 is cut to 0-10, the one at x 150-196 moves to 50-96.
    np.testing.assert_allclose(boxes, [[0, 10, 10, 70], [50, 40, 96, 118]])
    np.testing.assert_allclose(
        out["gaussian_map"].numpy(), GaussianMapRenderer()(boxes, (120, 100)), atol=1e-6
    )


def test_eval_mapper_keeps_no_annotations(record):
    out = GaussianDatasetMapper(
        False, augmentations=[], image_format="BGR", gaussian_renderer=GaussianMapRenderer()
    )(record)
    assert "instances" not in out and "gaussian_map" not in out and "annotations" not in out


def test_box_masks_for_mask_rcnn(record):
    out = _mapper([], cls=ShelfDatasetMapper, use_instance_mask=True)(record)
    masks = out["instances"].gt_masks
    np.testing.assert_allclose(masks.get_bounding_boxes().tensor.numpy(), BOXES)


def test_box_masks_follow_crops_without_shapely(record):
    # The synthetic Mask R-CNN config's scale jitter crops; a box-shaped mask is drawn from the
    # cropped box, so Detectron2's polygon cropping (which imports shapely) is never reached.
    cfg = get_config("synthetic/mask_rcnn_R18.yaml")
    mapper = ShelfDatasetMapper(cfg, is_train=True)
    assert "ScaleJitterCrop" in [type(a).__name__ for a in mapper.augmentations.augs]
    for seed in range(8):
        np.random.seed(seed)
        instances = mapper(record)["instances"]
        assert len(instances) > 0
        np.testing.assert_allclose(
            instances.gt_masks.get_bounding_boxes().tensor, instances.gt_boxes.tensor
        )
    assert "shapely" not in sys.modules
    # Masks of the dataset's own still go through Detectron2's path.
    own = copy.deepcopy(record)
    own["annotations"][0]["segmentation"] = [[20.0, 10.0, 60.0, 10.0, 40.0, 90.0]]
    out = _mapper([], cls=ShelfDatasetMapper, use_instance_mask=True)(own)
    np.testing.assert_allclose(out["instances"].gt_masks.polygons[0][0], [20, 10, 60, 10, 40, 90])
    np.testing.assert_allclose(
        out["instances"].gt_masks.polygons[1][0], [60, 10, 110, 10, 110, 70, 60, 70]
    )


def test_bad_image_names_the_file_or_is_skipped(record, tmp_path):
    bad = dict(record, file_name=str(tmp_path / "broken.jpg"))
    with open(bad["file_name"], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        _mapper([])(bad)

    train = _mapper([], skip_bad_images=True)
    assert train(bad) is None  # Detectron2's MapDataset draws another image
    assert train.num_bad_images == 1

    test = ShelfDatasetMapper(False, augmentations=[], image_format="BGR", skip_bad_images=True)
    out = test(bad)
    # Evaluation keeps the image id and sees a blank image, so its ground truth counts as missed.
    assert out["image_id"] == 7 and out["image"].shape == (3, 120, 200)
    assert out["image"].sum() == 0


def test_color_jitter_changes_pixels_not_boxes_and_only_in_training(record):
    cfg = get_cfg()
    add_gaussian_retina_config(cfg)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MIN_SIZE_TRAIN = (120,)
    cfg.INPUT.MIN_SIZE_TEST = 120
    plain = GaussianDatasetMapper(cfg, True)(record)
    cfg.INPUT.COLOR_JITTER = 0.4
    jittered = [GaussianDatasetMapper(cfg, True)(record) for _ in range(3)]
    for out in jittered:
        assert out["image"].dtype == plain["image"].dtype
        assert out["image"].shape == plain["image"].shape
        assert torch.equal(out["instances"].gt_boxes.tensor, plain["instances"].gt_boxes.tensor)
        assert torch.equal(out["gaussian_map"], plain["gaussian_map"])
    assert any(not torch.equal(out["image"], plain["image"]) for out in jittered)
    names = [type(a).__name__ for a in GaussianDatasetMapper(cfg, False).augmentations.augs]
    assert names == ["ResizeShortestEdge"]


@pytest.mark.parametrize("shape", [(120, 200), (200, 120)])
def test_scale_jitter_keeps_the_input_size_and_scales_the_boxes(shape):
    np.random.seed(0)
    aug = ScaleJitterCrop(60, 100, 0.5, 2.0)
    image = np.zeros((*shape, 3), dtype=np.uint8)
    expected = T.ResizeShortestEdge.get_output_shape(*shape, 60, 100)
    box = np.array([[0.0, 0.0, 120.0, 120.0]])  # the top-left square: kept whole unless cropped
    factors = []
    for _ in range(40):
        aug_input = T.AugInput(image, boxes=box.copy())
        transforms = T.AugmentationList([aug])(aug_input)
        assert aug_input.image.shape[:2] == expected
        resize = transforms.transforms[0]
        factors.append(resize.new_h / resize.h * min(shape) / 60)
        crop = transforms.transforms[1]
        sx, sy = resize.new_w / resize.w, resize.new_h / resize.h
        np.testing.assert_allclose(
            aug_input.boxes,
            [[-crop.x0, -crop.y0, 120 * sx - crop.x0, 120 * sy - crop.y0]],
            atol=1e-3,
        )
        # padding keeps the bottom-right corner: what is not image is pad value
        if resize.new_h < expected[0]:
            assert aug_input.image[resize.new_h :].min() == 128
    assert 0.5 - 0.02 <= min(factors) < 0.8 and 1.7 < max(factors) <= 2.0 + 0.02


@pytest.mark.parametrize("shape", [(120, 200), (200, 120)])
def test_scale_jitter_is_invertible_back_to_the_photo(shape):
    # Test-time use and visualisation map boxes back through the inverse, which needs each step's
    # original size: the resized image's for the crop, the crop's for the padding.
    np.random.seed(1)
    aug = ScaleJitterCrop(60, 100, 0.5, 2.0)
    image = np.zeros((*shape, 3), dtype=np.uint8)
    box = np.array([[30.0, 40.0, 50.0, 70.0]])
    seen = set()
    for _ in range(30):
        aug_input = T.AugInput(image.copy(), boxes=box.copy())
        transforms = T.AugmentationList([aug])(aug_input)
        resize = transforms.transforms[0]
        seen.add(resize.new_h < T.ResizeShortestEdge.get_output_shape(*shape, 60, 100)[0])
        inverse = transforms.inverse()
        assert inverse.apply_image(aug_input.image).shape == image.shape
        crop = transforms.transforms[1]
        sx, sy = resize.new_w / resize.w, resize.new_h / resize.h
        inside = (
            30 * sx >= crop.x0
            and 40 * sy >= crop.y0
            and 50 * sx <= crop.x0 + crop.w
            and 70 * sy <= crop.y0 + crop.h
        )
        if inside:
            np.testing.assert_allclose(inverse.apply_box(aug_input.boxes), box, atol=1e-3)
    assert seen == {True, False}  # both padded and cropped draws were inverted


@pytest.mark.parametrize("scales", [(0.0, 1.0), (-0.5, 1.0), (1.2, 1.0)])
def test_scale_jitter_refuses_an_empty_or_non_positive_range(scales):
    with pytest.raises(ValueError, match=re.escape(f"0 < min_scale <= max_scale, got {scales}")):
        ScaleJitterCrop(60, 100, *scales)


def test_scale_jitter_takes_a_single_scale():
    np.random.seed(0)
    aug_input = T.AugInput(np.zeros((120, 200, 3), dtype=np.uint8))
    resize = T.AugmentationList([ScaleJitterCrop(60, 100, 1.0, 1.0)])(aug_input).transforms[0]
    assert (resize.new_h, resize.new_w) == (60, 100)


def test_scale_jitter_from_config_only_in_training(record):
    cfg = get_cfg()
    add_gaussian_retina_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (60,), 100
    cfg.INPUT.SCALE_JITTER = (0.5, 1.5)
    train = GaussianDatasetMapper(cfg, True)
    assert [type(a).__name__ for a in train.augmentations.augs] == ["ScaleJitterCrop", "RandomFlip"]
    for _ in range(5):
        out = train(record)
        assert tuple(out["image"].shape[1:]) == (60, 100)
        assert tuple(out["gaussian_map"].shape) == (30, 50)
        boxes = out["instances"].gt_boxes.tensor
        assert (boxes[:, 2:] <= torch.tensor([100.0, 60.0])).all() and (boxes >= 0).all()
    names = [type(a).__name__ for a in GaussianDatasetMapper(cfg, False).augmentations.augs]
    assert names == ["ResizeShortestEdge"]
    cfg.INPUT.MIN_SIZE_TRAIN = (50, 60)
    message = (
        "INPUT.SCALE_JITTER needs a (min, max) pair and one INPUT.MIN_SIZE_TRAIN to jitter "
        "around; got (0.5, 1.5) and (50, 60)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        GaussianDatasetMapper(cfg, True)


@pytest.mark.parametrize("model", ["gln", "retinanet", "gdn", "goldman", "faster_rcnn"])
def test_quick_start_recipe_trains_on_both_sets_with_a_mild_jitter(model, record):
    # The synthetic base carries the recipe, so every model of the reproduction gets the same.
    cfg = get_config(f"synthetic/{model}_R18.yaml")
    assert cfg.DATASETS.TRAIN == ("synthetic_shelves_train", "synthetic_shelves_train_pictures")
    assert cfg.DATASETS.TEST == ("synthetic_shelves_val",)
    assert cfg.INPUT.COLOR_JITTER == 0.2 and tuple(cfg.INPUT.SCALE_JITTER) == (0.85, 1.25)
    assert cfg.SOLVER.MAX_ITER == 1100 and tuple(cfg.SOLVER.STEPS) == (880,)
    assert cfg.INPUT.MOSAIC_PROB == 0.5
    train_mapper = GaussianDatasetMapper(cfg, True, mosaic_pool=[record])
    names = [type(a).__name__ for a in train_mapper.augmentations.augs]
    assert names[:2] == ["ScaleJitterCrop", "RandomFlip"] and "RandomBrightness" in names
    test_names = [type(a).__name__ for a in GaussianDatasetMapper(cfg, False).augmentations.augs]
    assert test_names == ["ResizeShortestEdge"]


@pytest.mark.parametrize("model", ["gln", "retinanet"])
def test_real_shelves_configs_add_only_the_augmentation_and_pictures(model):
    base = flatten_results_dict(get_config(f"synthetic/{model}_R18.yaml"))
    cfg = get_config(f"synthetic/{model}_R18_real_shelves.yaml")
    changed = {k for k, v in flatten_results_dict(cfg).items() if base[k] != v}
    # GLN and RetinaNet get the same recipe, and it changes nothing but the training input and
    # the learning rate and schedule its figures were measured at.
    assert changed == {
        "INPUT/COLOR_JITTER",
        "INPUT/SCALE_JITTER",
        "INPUT/MOSAIC_PROB",
        "DATASETS/TRAIN",
        "OUTPUT_DIR",
        "SOLVER/BASE_LR",
        "SOLVER/MAX_ITER",
        "SOLVER/STEPS",
    }
    assert cfg.SOLVER.BASE_LR == 0.01
    assert cfg.SOLVER.MAX_ITER == 1000 and tuple(cfg.SOLVER.STEPS) == (800,)
    assert cfg.DATASETS.TRAIN == ("synthetic_shelves_train_pictures",)
    assert cfg.INPUT.MOSAIC_PROB == 0.0
    assert cfg.DATASETS.TEST == ("synthetic_shelves_val",)
    names = [type(a).__name__ for a in GaussianDatasetMapper(cfg, True).augmentations.augs]
    assert names == [
        "ScaleJitterCrop",
        "RandomFlip",
        "RandomBrightness",
        "RandomContrast",
        "RandomSaturation",
    ]


def _mapped(image, boxes):
    instances = Instances(image.shape[-2:])
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    return {"image": image, "instances": instances, "image_id": 1}


def test_mosaic_pastes_four_windows_and_keeps_boxes_by_visible_area():
    # Four constant images (values 10, 20, 30, 40) of the canvas size, one box each, so every
    # pixel and box of the mosaic tells which image and window it came from.
    parts = [
        _mapped(torch.full((3, 60, 80), 10 * (k + 1), dtype=torch.uint8), [[0, 0, 80, 60]])
        for k in range(4)
    ]
    np.random.seed(0)
    out = mosaic(parts)
    image = out["image"]
    assert image.shape == (3, 60, 80) and out["image_id"] == 1
    # The quadrants meet at one centre inside the middle half of the canvas.
    cx = int((image[0, 0] == 10).sum())
    cy = int((image[0, :, 0] == 10).sum())
    assert 20 <= cx <= 60 and 15 <= cy <= 45
    assert (image[:, :cy, :cx] == 10).all() and (image[:, :cy, cx:] == 20).all()
    assert (image[:, cy:, :cx] == 30).all() and (image[:, cy:, cx:] == 40).all()
    # A box over its whole image is cut to its quadrant, and kept only if half of it is left:
    # no quadrant of a 60x80 canvas holds half of it, so none is kept ...
    assert len(out["instances"]) == 0
    # ... and a lower threshold keeps each one, cut to exactly its quadrant.
    np.random.seed(0)
    out = mosaic(parts, min_visible_fraction=0.0)
    expected = [[0, 0, cx, cy], [cx, 0, 80, cy], [0, cy, cx, 60], [cx, cy, 80, 60]]
    assert out["instances"].gt_boxes.tensor.tolist() == expected
    assert out["instances"].image_size == (60, 80)


def test_mosaic_moves_a_box_with_its_window():
    rng = np.random.default_rng(0)
    parts = [
        _mapped(
            torch.as_tensor(rng.integers(0, 256, (3, 60, 80), dtype=np.uint8)), [[30, 20, 40, 34]]
        )
        for _ in range(4)
    ]
    np.random.seed(5)
    out = mosaic(parts, min_visible_fraction=1.0)
    assert len(out["instances"]) > 0
    # A box kept whole shows the same pixels as in its own image.
    for box in out["instances"].gt_boxes.tensor.int().tolist():
        x0, y0, x1, y1 = box
        window = out["image"][:, y0:y1, x0:x1]
        assert any(torch.equal(window, p["image"][:, 20:34, 30:40]) for p in parts)


def _coordinate_image(height, width, tag):
    # Channel 0 holds each pixel's column and channel 1 its row, so a pasted window tells its
    # offset in the image it came from; channel 2 tells the image.
    image = torch.full((3, height, width), tag, dtype=torch.uint8)
    image[0] = torch.arange(width, dtype=torch.uint8)[None, :]
    image[1] = torch.arange(height, dtype=torch.uint8)[:, None]
    return image


def test_mosaic_draws_every_window_of_each_image():
    parts = [_mapped(_coordinate_image(60, 80, 10 * (k + 1)), []) for k in range(4)]
    lowest, highest, centres = set(), set(), []
    for seed in range(150):
        np.random.seed(seed)
        image = mosaic(parts)["image"]
        cx = int((image[2, 0] == 10).sum())
        cy = int((image[2, :, 0] == 10).sum())
        centres.append((cx, cy))
        quadrants = [(0, 0, cx, cy), (cx, 0, 80, cy), (0, cy, cx, 60), (cx, cy, 80, 60)]
        for k, (x0, y0, x1, y1) in enumerate(quadrants):
            ox, oy = int(image[0, y0, x0]), int(image[1, y0, x0])
            room_x, room_y = 80 - (x1 - x0), 60 - (y1 - y0)
            assert 0 <= ox <= room_x and 0 <= oy <= room_y
            lowest.update({("x", k)} if ox == 0 else set(), {("y", k)} if oy == 0 else set())
            highest.update(
                {("x", k)} if ox == room_x else set(), {("y", k)} if oy == room_y else set()
            )
    # Each image's window reaches both of its edges in each direction across the draws.
    everywhere = {(axis, k) for axis in "xy" for k in range(4)}
    assert lowest == everywhere and highest == everywhere
    # The centre ranges over the middle half of the canvas.
    xs, ys = zip(*centres)
    assert 20 <= min(xs) <= 22 and 58 <= max(xs) <= 60
    assert 15 <= min(ys) <= 17 and 43 <= max(ys) <= 45


def test_mosaic_pads_a_quadrant_larger_than_its_image():
    parts = [_mapped(torch.full((3, 60, 80), 10, dtype=torch.uint8), [])]
    parts += [_mapped(torch.full((3, 8, 6), 20 * (k + 1), dtype=torch.uint8), []) for k in range(3)]
    np.random.seed(0)
    image = mosaic(parts, pad_value=7)["image"]
    cx = int((image[0, 0] == 10).sum())
    cy = int((image[0, :, 0] == 10).sum())
    assert (image[:, 0:8, cx : cx + 6] == 20).all()
    assert (image[:, cy : cy + 8, 0:6] == 40).all()
    assert (image[:, cy : cy + 8, cx : cx + 6] == 60).all()
    # Everything else in those three quadrants is padding.
    assert int((image[0] == 7).sum()) == 60 * 80 - cx * cy - 3 * 8 * 6


def test_mosaic_defaults_keep_half_visible_boxes_and_pad_grey():
    # Images smaller than every quadrant are pasted whole at the quadrant's corner: a box
    # hanging half over its image's edge keeps half its area, and a one-pixel box all of it.
    parts = [_mapped(torch.zeros((3, 60, 80), dtype=torch.uint8), [])]
    parts += [
        _mapped(torch.zeros((3, 15, 20), dtype=torch.uint8), [[10, 0, 30, 10], [4, 4, 5, 5]])
        for _ in range(3)
    ]
    np.random.seed(0)
    out = mosaic(parts)
    image = out["image"]
    cx = int((image[0, 0] == 0).sum()) - 20  # the first image's width on the top row
    cy = int((image[0, :, 0] == 0).sum()) - 15
    boxes = out["instances"].gt_boxes.tensor.tolist()
    corners = [(cx, 0), (0, cy), (cx, cy)]
    assert boxes == [
        box for x0, y0 in corners for box in ([x0 + 10, y0, x0 + 20, y0 + 10],
                                              [x0 + 4, y0 + 4, x0 + 5, y0 + 5])
    ]
    assert int((image[0] == 128).sum()) == 60 * 80 - cx * cy - 3 * 20 * 15


def test_mosaic_keeps_each_box_with_its_class_and_the_first_record():
    parts = []
    for k in range(4):
        part = _mapped(torch.full((3, 60, 80), 10, dtype=torch.uint8), [[0, 0, 80, 60]] * 2)
        part["instances"].gt_classes = torch.tensor([k, 10 + k])
        part.update(image_id=k, file_name=f"shelf_{k}.jpg", height=600 + k, width=800 + k)
        parts.append(part)
    np.random.seed(3)
    out = mosaic(parts, min_visible_fraction=0.0)
    assert out["instances"].gt_classes.tolist() == [0, 10, 1, 11, 2, 12, 3, 13]
    assert {k: out[k] for k in ("image_id", "file_name", "height", "width")} == {
        "image_id": 0, "file_name": "shelf_0.jpg", "height": 600, "width": 800
    }


def test_mosaic_drops_a_box_outside_its_window_whatever_the_fraction():
    # Images of twice the canvas, each with one box in its bottom-right corner: a window drawn
    # away from that corner shows none of it, and an empty cut is not a box.
    parts = [_mapped(torch.zeros((3, 120, 160), dtype=torch.uint8), [[150, 110, 160, 120]])
             for _ in range(4)]
    np.random.seed(0)
    out = mosaic(parts, min_visible_fraction=0.0)
    assert len(out["instances"]) < 4
    assert (out["instances"].gt_boxes.area() > 0).all()


@pytest.mark.parametrize("count", [3, 5])
def test_mosaic_needs_four_images(count):
    parts = [_mapped(torch.zeros((3, 60, 80), dtype=torch.uint8), []) for _ in range(count)]
    with pytest.raises(ValueError, match=f"mosaic needs four mapped images, got {count}"):
        mosaic(parts)


def test_mosaic_from_config_needs_the_pool_and_feeds_the_map(record):
    cfg = get_config("synthetic/gln_R18.yaml", "INPUT.MOSAIC_PROB", 1.0)
    with pytest.raises(ValueError, match="mosaic_pool"):
        GaussianDatasetMapper(cfg, is_train=True)
    assert GaussianDatasetMapper(cfg, is_train=False).mosaic_prob == 0
    mapper = GaussianDatasetMapper(cfg, is_train=True, mosaic_pool=[record])
    np.random.seed(1)
    out = mapper(record)
    boxes = out["instances"].gt_boxes.tensor.numpy()
    expected = mapper.gaussian_renderer(boxes, out["image"].shape[-2:])
    np.testing.assert_array_equal(out["gaussian_map"].numpy(), expected)


def test_mosaic_refuses_masks(record):
    cfg = get_config("synthetic/mask_rcnn_R18.yaml", "INPUT.MOSAIC_PROB", 0.5)
    with pytest.raises(ValueError, match="MODEL.MASK_ON"):
        ShelfDatasetMapper(cfg, is_train=True, mosaic_pool=[record])
    # Its config keeps the mosaic off, though Faster R-CNN's, which it inherits, has it on.
    assert get_config("synthetic/mask_rcnn_R18.yaml").INPUT.MOSAIC_PROB == 0


_XYWH = [[20, 10, 40, 80], [60, 10, 50, 60], [150, 40, 46, 78], [190, 100, 9, 19]]


@pytest.mark.parametrize(
    "boxes, modes",
    [
        (_XYWH, BoxMode.XYWH_ABS),  # the synthetic scenes' form: Python ints
        ([[v + 0.3 for v in b] for b in _XYWH], BoxMode.XYWH_ABS),
        (BOXES + [[190.0, 100.0, 199.0, 119.0]], BoxMode.XYXY_ABS),
        ([tuple(int(v) for v in b) for b in BOXES], BoxMode.XYXY_ABS),
        ([[20, 10.5, 40, 80]] + _XYWH[1:], BoxMode.XYWH_ABS),  # ints and floats mixed
        (_XYWH, [BoxMode.XYWH_ABS, BoxMode.XYXY_ABS] * 2),
        ([np.array(b, np.float32) + 0.3 for b in BOXES], BoxMode.XYXY_ABS),  # float32 arrays
        ([], BoxMode.XYWH_ABS),
    ],
)
def test_boxes_as_detectron2_maps_them_one_by_one(record, boxes, modes):
    # The mapper sends an image's boxes through the transforms as one array; Detectron2's
    # DatasetMapper, one by one, in each box's own dtype (integer boxes stay integers).
    modes = modes if isinstance(modes, list) else [modes] * len(boxes)
    record["annotations"] = [
        {"bbox": b, "bbox_mode": m, "category_id": i % 2, "iscrowd": int(i == 1)}
        for i, (b, m) in enumerate(zip(boxes, modes))
    ]
    before = copy.deepcopy(record)
    annotations = record["annotations"]
    augs = [
        T.ResizeShortestEdge(77, 1000),
        T.RandomFlip(prob=1.0, horizontal=True),
        T.RandomCrop("absolute", (60, 90)),
    ]
    ours = ShelfDatasetMapper(True, augmentations=augs, image_format="BGR")
    theirs = DatasetMapper(True, augmentations=augs, image_format="BGR")
    for seed in range(5):
        np.random.seed(seed)
        a = ours(record)["instances"]
        np.random.seed(seed)
        b = theirs(copy.deepcopy(record))["instances"]
        assert a.image_size == b.image_size
        assert torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor)
        assert torch.equal(a.gt_classes, b.gt_classes)
    # Read, never changed: the record keeps its list of annotations, and each annotation its
    # keys, values and the type of its box.
    assert record["annotations"] is annotations
    assert record.keys() == before.keys()
    assert len(record["annotations"]) == len(before["annotations"])
    for x, y in zip(record["annotations"], before["annotations"]):
        assert x.keys() == y.keys()
        assert type(x["bbox"]) is type(y["bbox"]) and np.array_equal(x["bbox"], y["bbox"])
        assert (x["bbox_mode"], x["category_id"], x["iscrowd"]) == (
            y["bbox_mode"], y["category_id"], y["iscrowd"]
        )


def test_decoded_cache_reads_each_file_once_and_maps_the_same(record, monkeypatch):
    import gaussian_retina.data.dataset_mapper as dataset_mapper

    reads = []
    read = dataset_mapper.read_shelf_image

    def counting_read(dataset_dict, *args, **kwargs):
        reads.append(dataset_dict["file_name"])
        return read(dataset_dict, *args, **kwargs)

    monkeypatch.setattr(dataset_mapper, "read_shelf_image", counting_read)
    augs = [T.RandomBrightness(1.5, 1.5)]
    cached = _mapper(augs, decoded_cache_mb=1)
    first, second = cached(record), cached(record)
    assert len(reads) == 1
    plain = _mapper(augs)(record)
    for out in (first, second):
        assert torch.equal(out["image"], plain["image"])
        assert torch.equal(out["gaussian_map"], plain["gaussian_map"])
    # A caller that writes into its image does not write into the cache.
    cached._read_image(record)[:] = 0
    assert cached._read_image(record).any()
    # Over the limit (the image is 70 KiB), or in evaluation, every call decodes.
    reads.clear()
    small = _mapper([], decoded_cache_mb=0.05)
    small(record), small(record)
    test = GaussianDatasetMapper(
        False, augmentations=[], image_format="BGR", gaussian_renderer=GaussianMapRenderer(),
        decoded_cache_mb=1,
    )
    test(record), test(record)
    assert len(reads) == 4


def test_decoded_cache_comes_from_the_config():
    cfg = get_config("finetune/gln_R18_photos.yaml")
    assert cfg.DATALOADER.DECODED_CACHE_MB > 0
    assert ShelfDatasetMapper.from_config(cfg, True)["decoded_cache_mb"] == cfg.DATALOADER.DECODED_CACHE_MB


def test_a_skipped_training_image_is_read_once(record, tmp_path, monkeypatch):
    import gaussian_retina.data.dataset_mapper as dataset_mapper

    bad = dict(record, file_name=str(tmp_path / "broken.jpg"), bad_input_policy="skip")
    with open(bad["file_name"], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    reads = []
    read = dataset_mapper.read_shelf_image
    monkeypatch.setattr(
        dataset_mapper, "read_shelf_image", lambda d, *a, **k: reads.append(1) or read(d, *a, **k)
    )
    mapper = _mapper([])
    assert mapper(bad) is None and mapper(bad) is None
    assert len(reads) == 1 and mapper.num_bad_images == 1


@pytest.mark.parametrize("height, width, reduction", [(768, 1024, 4), (480, 640, 2)])
def test_large_photos_decode_reduced_in_training_with_the_same_boxes(tmp_path, height, width,
                                                                     reduction):
    """Training reads a photo larger than its input at a fraction of its side; same boxes."""
    yy, xx = np.mgrid[0:height, 0:width]
    photo = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    record = {"file_name": str(tmp_path / "big.jpg"), "height": height, "width": width,
              "image_id": 1, "apply_exif": False, "annotations": [
                  {"bbox": [100.0, 50.0, 300.5, 400.0], "bbox_mode": 0, "category_id": 0}]}
    mapper = ShelfDatasetMapper(True, augmentations=[T.ResizeShortestEdge(192, 256)],
                                image_format="BGR")
    assert mapper._decode_reduction(record) == reduction
    import gaussian_retina.data.dataset_mapper as dataset_mapper

    decoded = []
    read = dataset_mapper.read_shelf_image
    with mock.patch.object(dataset_mapper, "read_shelf_image",
                           lambda *a, **k: decoded.append(read(*a, **k).shape) or read(*a, **k)):
        reduced = mapper(record)
    assert decoded == [(height // reduction, width // reduction, 3)]
    mapper._decode_reduction = lambda d: 1
    full = mapper(record)
    assert reduced["image"].shape == full["image"].shape == (3, 192, 256)
    assert torch.equal(reduced["instances"].gt_boxes.tensor, full["instances"].gt_boxes.tensor)
    np.testing.assert_allclose(reduced["instances"].gt_boxes.tensor[0].numpy(),
                               np.array([100, 50, 300.5, 400]) * 192 / height, rtol=1e-6)
    diff = (reduced["image"].float() - full["image"].float()).abs().mean()
    assert diff < 4.0  # two low-pass downscalings of the same photo
    # Evaluation decodes in full, as the predict command does.
    assert ShelfDatasetMapper(False, augmentations=[T.ResizeShortestEdge(192, 256)],
                              image_format="BGR")._decode_reduction(record) == 1


def _photo_record(h, w):
    return {"file_name": "photo.jpg", "height": h, "width": w}


@pytest.mark.parametrize(
    "augs, hw, reduction",
    [
        # The largest of 8, 4, 2 whose decode still covers what the resize asks: 192/768 is 1/4.
        ([T.ResizeShortestEdge(192, 256)], (768, 1024), 4),
        ([T.ResizeShortestEdge(192, 256)], (1024, 768), 4),
        ([T.ResizeShortestEdge(192, 256)], (1536, 2048), 8),
        ([T.ResizeShortestEdge(192, 256)], (700, 900), 2),
        ([T.ResizeShortestEdge(192, 256)], (300, 400), 1),
        # The long side can be the one that binds: 256/1600 < 192/760.
        ([T.ResizeShortestEdge(192, 256)], (760, 1600), 4),
        # Sides whose two ratios fall either side of 1/4: the smaller one decides.
        ([T.ResizeShortestEdge(192, 256)], (800, 985), 4),
        ([T.ResizeShortestEdge(192, 256)], (738, 1067), 4),
        ([ScaleJitterCrop(192, 256, 0.8, 1.0)], (800, 985), 4),
        ([ScaleJitterCrop(192, 256, 0.8, 1.0)], (738, 1067), 4),
        # A range of sizes: the largest counts.
        ([T.ResizeShortestEdge((96, 192), 256)], (1536, 2048), 8),
        ([T.ResizeShortestEdge((192, 384), 512)], (1536, 2048), 4),
        # Scale jitter: its largest scale counts.
        ([ScaleJitterCrop(192, 256, 0.8, 1.0)], (1536, 2048), 8),
        ([ScaleJitterCrop(192, 256, 0.8, 1.25)], (1536, 2048), 4),
        # Flips and colour keep the size, wherever they are.
        ([T.RandomFlip(), T.ResizeShortestEdge(192, 256), T.RandomBrightness(0.9, 1.1),
          T.RandomContrast(0.9, 1.1), T.RandomSaturation(0.9, 1.1)], (1536, 2048), 8),
        # An augmentation of unknown output size, two resizes, or none: read in full.
        ([T.ResizeShortestEdge(192, 256), T.RandomCrop("absolute", (100, 100))], (1536, 2048), 1),
        ([T.ResizeShortestEdge(192, 256), T.ResizeShortestEdge(96, 128)], (1536, 2048), 1),
        ([T.RandomFlip()], (1536, 2048), 1),
    ],
)
def test_the_decode_reduction_covers_the_training_input(augs, hw, reduction):
    mapper = ShelfDatasetMapper(True, augmentations=augs, image_format="BGR")
    assert mapper._decode_reduction(_photo_record(*hw)) == reduction


def test_no_decode_reduction_in_evaluation_or_without_the_recorded_size():
    augs = [T.ResizeShortestEdge(192, 256)]
    train = ShelfDatasetMapper(True, augmentations=augs, image_format="BGR")
    test = ShelfDatasetMapper(False, augmentations=augs, image_format="BGR")
    assert test._decode_reduction(_photo_record(1536, 2048)) == 1
    assert train._decode_reduction({"file_name": "photo.jpg", "height": 1536}) == 1
    assert train._decode_reduction({"file_name": "photo.jpg", "width": 2048}) == 1


def test_a_record_without_its_size_gets_the_decoded_one(record):
    for is_train in (True, False):
        mapper = ShelfDatasetMapper(is_train, augmentations=[], image_format="BGR")
        out = mapper({k: v for k, v in record.items() if k not in ("height", "width")})
        assert (out["height"], out["width"]) == (120, 200)
    # Evaluation records of photos without annotations map too.
    test = ShelfDatasetMapper(False, augmentations=[], image_format="BGR")
    out = test({k: v for k, v in record.items() if k != "annotations"})
    assert out["image"].shape == (3, 120, 200) and "annotations" not in out


@pytest.mark.parametrize("image_format", ["BGR", "RGB"])
def test_the_image_comes_in_the_models_format(record, image_format):
    out = ShelfDatasetMapper(False, augmentations=[], image_format=image_format)(record)
    bgr = cv2.imread(record["file_name"])
    expected = bgr if image_format == "BGR" else bgr[:, :, ::-1]
    np.testing.assert_array_equal(out["image"].numpy(), expected.transpose(2, 0, 1))


def test_mapping_for_masks_leaves_the_record_as_it_was(record):
    # One product with a mask of its own: the others get their box as a polygon, in the copy.
    record["annotations"][0]["segmentation"] = [[20.0, 10.0, 60.0, 10.0, 40.0, 90.0]]
    before = copy.deepcopy(record)
    for mapper in (
        _mapper([], cls=ShelfDatasetMapper, use_instance_mask=True),
        ShelfDatasetMapper(True, augmentations=[], image_format="BGR", use_instance_mask=True,
                           use_keypoint=False),
    ):
        out = mapper(record)
        assert len(out["instances"].gt_masks) == len(BOXES)
        assert record == before  # no box polygon left behind in the caller's annotations


def _tagged_records(tmp_path, count):
    records = []
    for k in range(count):
        path = str(tmp_path / f"shelf{k}.png")
        cv2.imwrite(path, np.full((40, 60, 3), 10 * (k + 1), np.uint8))
        records.append({"file_name": path, "height": 40, "width": 60, "image_id": k,
                        "annotations": []})
    return records


def test_the_decoded_cache_keeps_each_file_its_own_image_up_to_its_size(tmp_path, monkeypatch):
    import gaussian_retina.data.dataset_mapper as dataset_mapper

    records = _tagged_records(tmp_path, 3)
    reads = []
    read = dataset_mapper.read_shelf_image
    monkeypatch.setattr(dataset_mapper, "read_shelf_image",
                        lambda d, *a, **k: reads.append(d["file_name"]) or read(d, *a, **k))
    # Room for exactly two of the three images (40 x 60 x 3 bytes each).
    mapper = ShelfDatasetMapper(True, augmentations=[], image_format="BGR",
                                decoded_cache_mb=2 * 40 * 60 * 3 / 2**20)
    for _ in range(2):
        for k, r in enumerate(records):
            assert int(mapper(r)["image"][0, 0, 0]) == 10 * (k + 1)
    assert reads == [r["file_name"] for r in records] + [records[2]["file_name"]]


def test_a_skipped_image_is_warned_once_and_blank_in_evaluation(record, tmp_path, caplog):
    bad = dict(record, file_name=str(tmp_path / "broken.jpg"))
    with open(bad["file_name"], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    logger = logging.getLogger("gaussian_retina.data.dataset_mapper")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="gaussian_retina.data.dataset_mapper"):
            test = ShelfDatasetMapper(False, augmentations=[], image_format="BGR",
                                      skip_bad_images=True)
            first, second = test(bad), test(bad)
    finally:
        logger.removeHandler(caplog.handler)
    messages = {r.getMessage() for r in caplog.records}
    assert len(messages) == 1
    expected = f"Skipping bad image (1 so far here): {bad['file_name']}"
    assert next(iter(messages)).startswith(expected)
    for out in (first, second):
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 120, 200)


def test_the_mosaic_tiles_the_configured_share_of_images(record, tmp_path):
    plain = ShelfDatasetMapper(True, augmentations=[], image_format="BGR")(record)["image"]
    bad = dict(record, file_name=str(tmp_path / "broken.jpg"), bad_input_policy="skip")
    with open(bad["file_name"], "wb") as f:
        f.write(b"not an image")
    # A pool holding a skipped image still gives four images to each mosaic.
    pool = [record, bad]
    for prob, low, high in ((0.0, 0, 0), (0.5, 60, 140), (1.0, 200, 200)):
        mapper = ShelfDatasetMapper(True, augmentations=[], image_format="BGR",
                                    mosaic_prob=prob, mosaic_pool=pool)
        np.random.seed(0)
        tiled = sum(not torch.equal(mapper(record)["image"], plain) for _ in range(200))
        assert low <= tiled <= high, prob
    # A skipped image is skipped, mosaic or not.
    assert mapper(bad) is None


def test_mapper_options_from_the_config():
    cfg = get_config("synthetic/gln_R18.yaml", "INPUT.COLOR_JITTER", 0.3,
                     "DATASETS.BAD_INPUT_POLICY", "skip")
    # Detectron2's convention: a mapper made from a cfg alone is a training mapper.
    for cls in (ShelfDatasetMapper, GaussianDatasetMapper):
        assert cls(cfg, mosaic_pool=[{}]).is_train
    mapper = GaussianDatasetMapper(cfg, True, mosaic_pool=[{}])
    assert mapper.skip_bad_images
    ranges = {type(a).__name__: (a.intensity_min, a.intensity_max)
              for a in mapper.augmentations.augs if hasattr(a, "intensity_min")}
    assert ranges == pytest.approx({"RandomBrightness": (0.7, 1.3), "RandomContrast": (0.7, 1.3),
                                    "RandomSaturation": (0.7, 1.3)})
    for policy in ("error", ""):
        cfg.DATASETS.BAD_INPUT_POLICY = policy
        assert not ShelfDatasetMapper(cfg, True, mosaic_pool=[{}]).skip_bad_images
    g = cfg.MODEL.GAUSSIAN
    g.OUT_STRIDE, g.TEMPLATE_SIZE, g.SIGMA, g.ACCUMULATE = 4, 60, 20.0, "max"
    renderer = GaussianDatasetMapper(cfg, True, mosaic_pool=[{}]).gaussian_renderer
    assert (renderer.stride, renderer.template_size, renderer.sigma, renderer.accumulate) == (
        4, 60, 20.0, "max")


def test_boxes_of_plain_lists_go_through_the_transforms_at_once(record):
    calls = []

    class Counting(T.Transform):
        def apply_image(self, img):
            return img

        def apply_coords(self, coords):
            calls.append(len(coords))
            return coords

    class Once(T.Augmentation):
        def get_transform(self, image):
            return Counting()

    ShelfDatasetMapper(True, augmentations=[Once()], image_format="BGR")(record)
    assert calls == [4 * len(BOXES)]  # four corners of every box, in one call
