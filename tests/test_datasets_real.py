"""The retail datasets API on the real shelf data in ../shared/data (read-only, never copied)."""

import uuid
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from common import SHARED_DATA, set_bad_input_policy
from gaussian_retina.shelves import (
    AnnotationError,
    InputReport,
    register_retail_dataset,
)
from gaussian_retina.shelves.retail_csv import parse_benchmark_csv
from gaussian_retina.data.image_reader import read_image_size, read_shelf_image

TOBACCO = SHARED_DATA / "tobacco_shelves"
BENCHMARK = SHARED_DATA / "benchmark_annotations"

pytestmark = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real shelf data absent: {SHARED_DATA}"
)


def _register(tmp_path, image_root, annotations):
    name = f"test_real_{uuid.uuid4().hex[:8]}"
    register_retail_dataset(
        name, str(image_root), str(annotations), coco_cache_dir=str(tmp_path / "cache")
    )
    return name


def _boxes(dicts):
    return {(Path(d["file_name"]).name, tuple(a["bbox"])) for d in dicts for a in d["annotations"]}


def test_tobacco_shelves_counts_and_sizes(tmp_path):
    dicts = DatasetCatalog.get(_register(tmp_path, TOBACCO / "images", TOBACCO / "annotations.csv"))
    assert len(dicts) == 24
    assert sum(len(d["annotations"]) for d in dicts) == 733
    for d in dicts:
        assert (d["height"], d["width"]) == read_image_size(d["file_name"])
        b = np.array([a["bbox"] for a in d["annotations"]])
        assert (b[:, 2] <= d["width"]).all() and (b[:, 3] <= d["height"]).all()


def test_benchmark_csv_with_most_images_missing(tmp_path):
    ann = BENCHMARK / "TobaccoShelves_coco_gt_object.csv"
    name = _register(tmp_path, TOBACCO / "images", ann)
    with pytest.raises(AnnotationError) as e:
        DatasetCatalog.get(name)
    assert "image named but missing: 12,451 rows of 330 images" in str(e.value)
    assert f"{ann}, lines 2-11 (10 rows): image named but missing ('C1_P01_N1_S2_1.JPG'" in str(
        e.value
    )
    assert len(e.value.problems) == 12451

    set_bad_input_policy(name, "skip")
    kept = DatasetCatalog.get(name)
    assert (len(kept), sum(len(d["annotations"]) for d in kept)) == (24, 733)
    # The benchmark's rows for these 24 photos are the SKU-110K-layout file's boxes.
    sku = DatasetCatalog.get(_register(tmp_path, TOBACCO / "images", TOBACCO / "annotations.csv"))
    assert _boxes(kept) == _boxes(sku)


@pytest.mark.parametrize(
    "csv,images,boxes",
    [
        ("CAPG_coco_gt_object.csv", 234, 4756),
        ("Grocery_products_coco_gt_object.csv", 679, 9184),
        ("Holoselecta_coco_gt_object.csv", 295, 10036),
        ("TobaccoShelves_coco_gt_object.csv", 354, 13184),
    ],
)
def test_benchmark_csvs_parse_completely(csv, images, boxes):
    report = InputReport(csv, csv)
    table = parse_benchmark_csv(str(BENCHMARK / csv), report)
    assert report.num_problems == 0
    assert (table.num_images, table.num_boxes) == (images, boxes)
    assert sorted(table.image_ids.tolist()) == list(range(1, images + 1))


def test_stale_exif_boxes_stay_on_the_stored_pixels(tmp_path):
    root = TOBACCO / "exif_stale"
    name = _register(tmp_path, root / "images", root / "annotations_raw_pixels.csv")
    dicts = DatasetCatalog.get(name)
    assert [
        (Path(d["file_name"]).name, d["height"], d["width"], len(d["annotations"])) for d in dicts
    ] == [
        ("C1_P03_N1_S2_1.JPG", 1851, 3264, 29),
        ("C3_P07_N1_S6_1.JPG", 3192, 2432, 60),
    ]
    for d in dicts:
        assert d["apply_exif"] is False
        image = read_shelf_image(d, "BGR")  # the size check passes: raw pixels
        assert image.shape[:2] == (d["height"], d["width"])
        b = np.array([a["bbox"] for a in d["annotations"]])
        assert (b[:, 2] <= d["width"]).all() and (b[:, 3] <= d["height"]).all()
