"""
``synthetic_shelves_train`` / ``synthetic_shelves_val``: a procedural dense-shelf dataset that
needs no download, so the quick start trains and evaluates anywhere.

The scenes (see ``synthetic_scene.py``) are rows of touching look-alike products; a product cut by
the image border is annotated, with its box clipped, when at least half of it is inside the image.

The images are generated once, on the first ``DatasetCatalog.get``, and cached as JPEGs plus a COCO
json, so Detectron2's ``COCOEvaluator`` reads them unchanged::

    $DETECTRON2_DATASETS/synthetic_shelves/<version>-<W>x<H>-<params digest>/
        <split>-<num_images>-seed<seed>/
            annotations.json
            images/000000.jpg ...

Each image is a pure function of (version, scene params, seed, split, image index): with the same
NumPy and OpenCV, every machine writes the same bytes. A split is written to a temporary folder and renamed into
place, so an interrupted run or two processes racing never leave a half cache.

Pre-generate with ``python tools/generate_synthetic_shelves.py --root datasets``.
"""
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import asdict

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .synthetic_scene import ShelfSceneParams, render_shelf_scene

__all__ = [
    "ShelfSceneParams",
    "synthetic_shelves_dir",
    "generate_synthetic_shelves",
    "load_synthetic_shelves",
    "register_synthetic_shelves",
]

logger = logging.getLogger(__name__)

# Bump when the generator's output changes, so old caches are not reused.
_VERSION = "v1"
# Default number of images per split.
_SPLIT_SIZES = {"train": 300, "val": 50, "val_large": 12}
# Scene parameters added after v1, with the value that draws the v1 scenes: left out of the cache
# tag at that value, so the v1 splits keep their folders.
_V1_VALUES = {"stock_depth_prob": 0.0, "picture_prob": 0.0}
# Products stocked several deep in half the rows (``ShelfSceneParams.stock_depth_prob``).
_DEEP = ShelfSceneParams(stock_depth_prob=0.5)
# Half the box, bag and jar designs carry a picture (``ShelfSceneParams.picture_prob``).
_PICTURES = ShelfSceneParams(picture_prob=0.5)
# Phone-photo-sized scenes of 300-600 products (as dense shelf photos, SKU-110K's): a single
# pass at the training input size shrinks their products past what the model resolves, so they
# measure tiled inference (results/inference.md).
_LARGE = ShelfSceneParams(
    long_side=4032,
    short_side=3024,
    portrait_prob=0.0,
    min_objects=300,
    max_objects=600,
    min_shelf_pitch=170,
    max_shelf_pitch=300,
)
_PREDEFINED_SPLITS = {
    "synthetic_shelves_train": ("train", ShelfSceneParams()),
    "synthetic_shelves_val": ("val", ShelfSceneParams()),
    "synthetic_shelves_train_deep": ("train", _DEEP),
    "synthetic_shelves_val_deep": ("val", _DEEP),
    "synthetic_shelves_train_pictures": ("train", _PICTURES),
    "synthetic_shelves_val_pictures": ("val", _PICTURES),
    "synthetic_shelves_val_large": ("val_large", _LARGE),
}
_JPEG_QUALITY = 92
_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def synthetic_shelves_dir(root, split, *, num_images=None, seed=0, params=ShelfSceneParams()):
    """
    The cache folder of one split (it may not exist yet).

    Args:
        root (str): datasets root, as ``$DETECTRON2_DATASETS``.
        split (str): "train", "val", or any name when ``num_images`` is given; the split's name
            seeds its images, so splits with the same seed differ.
        num_images (int or None): None means the split's default (300 train, 50 val).
        seed (int): base seed.
        params (ShelfSceneParams): scene parameters.
    """
    num_images = _num_images(split, num_images)
    digest = hashlib.sha1(
        json.dumps({"version": _VERSION, **_scene_fields(params)}, sort_keys=True).encode()
    ).hexdigest()[:8]
    tag = f"{_VERSION}-{params.long_side}x{params.short_side}-{digest}"
    return os.path.join(root, "synthetic_shelves", tag, f"{split}-{num_images}-seed{seed}")


def generate_synthetic_shelves(root, split, *, num_images=None, seed=0, params=ShelfSceneParams()):
    """
    Generate a split into its cache folder unless it is already there.

    Args: as :func:`synthetic_shelves_dir`.

    Returns:
        str: path of the split's COCO json; its images are in the ``images`` folder next to it.
    """
    num_images = _num_images(split, num_images)
    out_dir = synthetic_shelves_dir(root, split, num_images=num_images, seed=seed, params=params)
    json_file = os.path.join(out_dir, "annotations.json")
    if os.path.isfile(json_file):
        return json_file
    if os.path.exists(out_dir):
        raise RuntimeError(
            f"{out_dir} exists but has no annotations.json; delete it to regenerate the split."
        )

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out_dir)}-", dir=parent)
    start = time.perf_counter()
    logger.info(f"Generating {num_images} synthetic shelf images into {out_dir} ...")
    try:
        os.chmod(tmp_dir, 0o755)  # mkdtemp's 0700 would hide the cache from other users
        os.makedirs(os.path.join(tmp_dir, "images"))
        coco = _write_split(tmp_dir, split, num_images, seed, params)
        with open(os.path.join(tmp_dir, "annotations.json"), "w") as f:
            json.dump(coco, f, separators=(",", ":"))
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            # Another process renamed its (byte-identical) copy first; use that one.
            if not os.path.isfile(json_file):
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info(
        f"Generated {num_images} images, {len(coco['annotations'])} boxes"
        f" in {time.perf_counter() - start:.1f} s."
    )
    return json_file


def load_synthetic_shelves(root, split, dataset_name=None, **kwargs):
    """
    Generate the split if needed, then load it with Detectron2's ``load_coco_json``.

    Args:
        root, split, kwargs: as :func:`generate_synthetic_shelves`.
        dataset_name (str or None): passed to ``load_coco_json`` (sets the class metadata).

    Returns:
        list[dict]: Detectron2's standard dataset dicts, boxes in ``BoxMode.XYWH_ABS``.
    """
    json_file = generate_synthetic_shelves(root, split, **kwargs)
    image_root = os.path.join(os.path.dirname(json_file), "images")
    return load_coco_json(json_file, image_root, dataset_name)


def register_synthetic_shelves(root):
    """
    Register ``synthetic_shelves_train`` and ``synthetic_shelves_val``, and their ``_deep`` twins
    (products stocked several deep in half the rows) and ``_pictures`` twins (a picture on half
    the box, bag and jar designs), under ``root``. Nothing is
    generated until a split is first loaded. Calling this again with the same root is a no-op;
    with another root it re-registers them there.
    """
    for name, (split, params) in _PREDEFINED_SPLITS.items():
        out_dir = synthetic_shelves_dir(root, split, params=params)
        json_file = os.path.join(out_dir, "annotations.json")
        if name in DatasetCatalog:
            if MetadataCatalog.get(name).get("json_file") == json_file:
                continue
            logger.info(f"Re-registering {name} at {out_dir}.")
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            functools.partial(load_synthetic_shelves, root, split, dataset_name=name, params=params),
        )
        MetadataCatalog.get(name).set(
            thing_classes=[_CATEGORY["name"]],
            thing_dataset_id_to_contiguous_id={_CATEGORY["id"]: 0},
            json_file=json_file,
            image_root=os.path.join(out_dir, "images"),
            evaluator_type="coco",
        )


def _scene_fields(params):
    """The params that name a split's scenes: all but later ones left at their v1 value."""
    return {k: v for k, v in asdict(params).items() if k not in _V1_VALUES or v != _V1_VALUES[k]}


def _num_images(split, num_images):
    if num_images is not None:
        return int(num_images)
    if split not in _SPLIT_SIZES:
        raise KeyError(f"Unknown split {split!r}: give num_images, or one of {list(_SPLIT_SIZES)}.")
    return _SPLIT_SIZES[split]


def _image_rng(seed, split, index):
    """Independent per image, so image i is the same whatever the split's size."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _write_split(out_dir, split, num_images, seed, params):
    """Render and write the images of a split; returns its COCO dict."""
    images, annotations = [], []
    for index in range(num_images):
        image, boxes = render_shelf_scene(_image_rng(seed, split, index), params)
        file_name = f"{index:06d}.jpg"
        ok = cv2.imwrite(
            os.path.join(out_dir, "images", file_name), image,
            [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
        )
        if not ok:
            raise OSError(f"Could not write {os.path.join(out_dir, 'images', file_name)}")
        image_id = index + 1  # COCO ids start at 1
        images.append(
            {"id": image_id, "file_name": file_name,
             "height": int(image.shape[0]), "width": int(image.shape[1])}
        )
        for x1, y1, x2, y2 in boxes.tolist():
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id,
                 "category_id": _CATEGORY["id"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            )
    return {
        "info": {
            "description": "gaussian-retina synthetic dense shelves",
            "version": _VERSION,
            "split": split,
            "seed": seed,
            "params": _scene_fields(params),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [_CATEGORY],
    }
