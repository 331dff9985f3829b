"""Retail dataset registration, parsing and bad-input handling, on small generated folders."""

import json
import logging
import os
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from common import get_config, set_bad_input_policy
from gaussian_retina.shelves import (
    AnnotationError,
    detect_format,
    register_retail_dataset,
    retail_dataset_spec,
)

SIZES = {"a.jpg": (40, 60), "b.jpg": (50, 30), "c.jpg": (32, 32)}  # name -> (h, w)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name, (h, w) in SIZES.items():
        Image.new("RGB", (w, h), (120, 80, 40)).save(root / name)
    return root


def _register(tmp_path, images, annotations, fmt="auto", **kwargs):
    name = f"test_retail_{uuid.uuid4().hex[:8]}"
    kwargs.setdefault("coco_cache_dir", str(tmp_path / "cache"))
    register_retail_dataset(name, str(images), str(annotations), fmt, **kwargs)
    return name


def _write(path, text):
    path.write_text(text)
    return path


SKU_ROWS = [
    "b.jpg,2,3,20,40,object,30,50",
    "a.jpg,1,2,10,20,object,60,40",
    "a.jpg,30,5,50,35,object,60,40",
    "c.jpg,0,0,32,32,object,32,32",
]


def test_sku110k_csv_loads_dicts(tmp_path, images):
    ann = _write(tmp_path / "annotations_train.csv", "\n".join(SKU_ROWS) + "\n")
    name = _register(tmp_path, images, ann)
    dicts = DatasetCatalog.get(name)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [d["image_id"] for d in dicts] == [1, 2, 3]  # rank of the sorted names
    a = dicts[0]
    assert (a["height"], a["width"]) == SIZES["a.jpg"]
    assert a["apply_exif"] is False  # retail CSV boxes fit the stored pixels
    assert [x["bbox"] for x in a["annotations"]] == [[1, 2, 10, 20], [30, 5, 50, 35]]
    assert all(
        x["bbox_mode"] == BoxMode.XYXY_ABS and x["category_id"] == 0
        for d in dicts
        for x in d["annotations"]
    )
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["object"] and meta.evaluator_type == "coco"


def test_image_ids_do_not_depend_on_row_order(tmp_path, images):
    one = _write(tmp_path / "one.csv", "\n".join(SKU_ROWS) + "\n")
    two = _write(tmp_path / "two.csv", "\n".join(reversed(SKU_ROWS)) + "\n")
    ids = []
    for ann in (one, two):
        dicts = DatasetCatalog.get(_register(tmp_path, images, ann))
        ids.append({os.path.basename(d["file_name"]): d["image_id"] for d in dicts})
    assert ids[0] == ids[1]


def test_benchmark_csv_reads_sizes_and_maps_brands_to_object(tmp_path, images):
    ann = _write(
        tmp_path / "TobaccoShelves_coco_gt_object.csv",
        "image_name,x1,y1,x2,y2,class\nb.jpg,2,3,20,40,7\na.jpg,1,2,10,20,0\n",
    )
    assert detect_format(str(ann)) == "benchmark"
    dicts = DatasetCatalog.get(_register(tmp_path, images, ann))
    assert [(d["height"], d["width"]) for d in dicts] == [SIZES["a.jpg"], SIZES["b.jpg"]]
    assert [d["annotations"][0]["category_id"] for d in dicts] == [0, 0]


def test_detect_format(tmp_path):
    assert detect_format(str(_write(tmp_path / "s.csv", SKU_ROWS[0] + "\n"))) == "sku110k"
    assert detect_format(str(_write(tmp_path / "b.csv", "a.jpg,1,2,3,4,object\n"))) == "benchmark"
    assert detect_format(str(_write(tmp_path / "c.json", "{}"))) == "coco"
    assert detect_format(str(_write(tmp_path / "c.txt", ' {"images": []}'))) == "coco"
    (tmp_path / "labels").mkdir()
    assert detect_format(str(tmp_path / "labels")) == "yolo"
    with pytest.raises(AnnotationError, match=r"odd\.csv, line 2: cannot tell the CSV format"):
        detect_format(str(_write(tmp_path / "odd.csv", "\na,1,2\n")))


def test_registration_is_lazy_and_names_missing_paths(tmp_path):
    name = _register(tmp_path, tmp_path / "nope", tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="nope"):
        DatasetCatalog.get(name)


# One malformed row per case: (row, reason, detail expected in the message).
BAD_ROWS = [
    ("a.jpg,1,2,10,20,object", "wrong column count", "6 fields, expected 8"),
    ("a.jpg,1,two,10,20,object,60,40", "non-numeric field", "y1 = 'two'"),
    ("a.jpg,1,2,nan,20,object,60,40", "non-numeric field", "x2 = 'nan'"),
    ("a.jpg,10,2,10,20,object,60,40", "x2 <= x1 or y2 <= y1", "box [10, 2, 10, 20]"),
    ("zz.jpg,1,2,10,20,object,60,40", "image named but missing", "'zz.jpg' not found"),
    ("a.jpg,70,2,80,20,object,60,40", "box outside the image", "vs image 60x40"),
    ("a.jpg,1,2,10,20,object,0,40", "invalid image size", "image_width=0"),
    ("a.jpg,1,2,10,20,object,61,40", "inconsistent image size", "61x40 here"),
]


@pytest.mark.parametrize("row,reason,detail", BAD_ROWS, ids=[r[1] for r in BAD_ROWS])
def test_malformed_row_error_names_file_line_problem(tmp_path, images, row, reason, detail):
    ann = _write(tmp_path / "ann.csv", "\n".join(SKU_ROWS[:3] + [row] + SKU_ROWS[3:]) + "\n")
    name = _register(tmp_path, images, ann)
    with pytest.raises(AnnotationError) as e:
        DatasetCatalog.get(name)
    msg = str(e.value)
    assert f"{ann}, line 4: {reason}" in msg
    assert detail in msg
    assert [(p.location, p.reason) for p in e.value.problems] == [("line 4", reason)]

    set_bad_input_policy(name, "skip")
    dicts = DatasetCatalog.get(name)
    assert sum(len(d["annotations"]) for d in dicts) == len(SKU_ROWS)


def test_skip_policy_counts_every_drop_in_one_summary_line(tmp_path, images, caplog):
    rows = SKU_ROWS + [
        "a.jpg,1,2,10,20,object",  # wrong column count
        "a.jpg,x,2,10,20,object,60,40",  # non-numeric
        "a.jpg,5,2,3,20,object,60,40",  # x2 <= x1
        "zz.jpg,1,2,10,20,object,60,40",  # missing image
        "zz.jpg,3,2,10,20,object,60,40",  # missing image, same image
        "b.jpg,-5,10,10,60,object,30,50",  # partly outside: clipped
        "b.jpg,29.5,10,40,20,object,30,50",  # 0.5 px wide once clipped: degenerate
    ]
    ann = _write(tmp_path / "ann.csv", "\n".join(rows) + "\n")
    name = _register(tmp_path, images, ann)
    set_bad_input_policy(name, "skip")
    with caplog.at_level(logging.INFO):
        dicts = DatasetCatalog.get(name)
    b = next(d for d in dicts if d["file_name"].endswith("b.jpg"))
    assert [0, 10, 10, 50] in [x["bbox"] for x in b["annotations"]]
    assert sum(len(d["annotations"]) for d in dicts) == len(SKU_ROWS) + 1
    summary = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(summary) == 1
    for part in (
        "kept 3 images, 5 boxes",
        "dropped 5 rows",
        "wrong column count: 1 rows",
        "non-numeric field: 1 rows",
        "x2 <= x1 or y2 <= y1: 1 rows",
        "image named but missing: 2 rows of 1 images",
        "clipped 1 boxes",
        "dropped 1 degenerate",
    ):
        assert part in summary[0]


def test_image_losing_all_rows_is_dropped_and_counted(tmp_path, images, caplog):
    ann = _write(tmp_path / "ann.csv", SKU_ROWS[0] + "\nc.jpg,40,40,50,50,object,32,32\n")
    name = _register(tmp_path, images, ann)
    set_bad_input_policy(name, "skip")
    with caplog.at_level(logging.INFO):
        dicts = DatasetCatalog.get(name)
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["b.jpg"]
    assert "dropped 1 images whose rows were all dropped" in caplog.text


def test_recorded_size_disagreeing_with_file(tmp_path, images):
    ann = _write(tmp_path / "ann.csv", "a.jpg,1,2,10,20,object,40,60\n" + SKU_ROWS[0] + "\n")
    name = _register(tmp_path, images, ann)
    with pytest.raises(
        AnnotationError,
        match=r"line 1: recorded size disagrees with the file "
        r"\(a.jpg: file is 60x40 .*annotations say 40x60\)",
    ):
        DatasetCatalog.get(name)
    unchecked = _register(tmp_path, images, ann, check_image_sizes=False)
    assert len(DatasetCatalog.get(unchecked)) == 2  # left to read_shelf_image


def test_nothing_usable_is_an_error_under_skip(tmp_path, images):
    ann = _write(tmp_path / "ann.csv", "zz.jpg,1,2,10,20,object,60,40\n")
    name = _register(tmp_path, images, ann)
    set_bad_input_policy(name, "skip")
    with pytest.raises(AnnotationError, match="nothing usable"):
        DatasetCatalog.get(name)


def test_crlf_bom_blank_lines_and_header(tmp_path, images):
    text = "\ufeffimage_name,x1,y1,x2,y2,class,image_width,image_height\r\n\r\n" + "\r\n".join(
        SKU_ROWS
    )
    ann = tmp_path / "ann.csv"
    ann.write_bytes(text.encode("utf-8"))
    dicts = DatasetCatalog.get(_register(tmp_path, images, ann))
    assert sum(len(d["annotations"]) for d in dicts) == len(SKU_ROWS)


def _coco(tmp_path):
    data = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "height": 40, "width": 60},
            {"id": 3, "file_name": "b.jpg", "height": 50, "width": 30},
            {"id": 9, "file_name": "c.jpg", "height": 32, "width": 32},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [1, 2, 9, 18], "category_id": 5, "iscrowd": 0},
            {"id": 2, "image_id": 3, "bbox": [2, 3, 18, 37], "category_id": 2},
        ],
        "categories": [{"id": 2, "name": "x"}, {"id": 5, "name": "y"}],
    }
    return data


def test_coco_json_keeps_ids_and_images_without_boxes(tmp_path, images):
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(_coco(tmp_path)))
    dicts = DatasetCatalog.get(_register(tmp_path, images, ann))
    assert [d["image_id"] for d in dicts] == [3, 7, 9]
    assert dicts[1]["annotations"][0]["bbox"] == [1, 2, 10, 20]
    assert dicts[2]["annotations"] == []  # listed without boxes: a background image
    assert all(d["apply_exif"] for d in dicts)


def test_coco_json_problems(tmp_path, images):
    data = _coco(tmp_path)
    data["annotations"].append({"id": 3, "image_id": 99, "bbox": [1, 1, 2, 2]})
    data["annotations"].append({"id": 4, "image_id": 7, "bbox": [1, "x", 2, 2]})
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as e:
        DatasetCatalog.get(_register(tmp_path, images, ann))
    assert f"{ann}, annotation index 2: unknown image id (image_id 99)" in str(e.value)
    assert f"{ann}, annotation index 3: malformed bbox" in str(e.value)
    ann.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(AnnotationError, match=r"instances.json, line 2 column .*not valid JSON"):
        DatasetCatalog.get(_register(tmp_path, images, ann))


def test_yolo_labels(tmp_path, images):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.25\n3 0.1 0.1 0.1 0.1\n")
    (labels / "classes.txt").write_text("object\n")
    (labels / "b.txt").write_text("")  # background, as is c.jpg without a label file
    dicts = DatasetCatalog.get(_register(tmp_path, images, labels))
    assert len(dicts) == 3
    np.testing.assert_allclose(dicts[0]["annotations"][0]["bbox"], [15, 15, 45, 25])
    assert [len(d["annotations"]) for d in dicts] == [2, 0, 0]

    (labels / "zz.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (labels / "a.txt").write_text("0 0.5 0.5 0.5\n")
    with pytest.raises(AnnotationError) as e:
        DatasetCatalog.get(_register(tmp_path, images, labels))
    assert f"{labels / 'a.txt'}, line 1: wrong column count" in str(e.value)
    assert f"{labels / 'zz.txt'}, line 1: image named but missing" in str(e.value)


def test_yolo_split_written_from_dicts_reads_back(tmp_path, images):
    from gaussian_retina.shelves.coco_yolo import write_yolo_split, yolo_label_rows

    rows = SKU_ROWS + ["a.jpg,50,30,70,45,object,60,40"]  # runs past the image: clipped to it
    ann = _write(tmp_path / "ann.csv", "\n".join(rows) + "\n")
    dicts = DatasetCatalog.get(_register(tmp_path, images, ann))
    a = next(d for d in dicts if d["file_name"].endswith("a.jpg"))
    # (1, 2, 10, 20) in a 60x40 image: centre (5.5, 11), size (9, 18).
    assert yolo_label_rows(a)[0] == "0 0.091667 0.275000 0.150000 0.450000"
    crowd = dict(a, annotations=[dict(a["annotations"][0], iscrowd=1)])
    assert yolo_label_rows(crowd) == []

    root = tmp_path / "yolo"
    assert write_yolo_split(dicts, root, "train") == (3, 5)
    assert os.readlink(root / "images" / "train" / "a.jpg") == str(images / "a.jpg")
    back = DatasetCatalog.get(
        _register(tmp_path, root / "images" / "train", root / "labels" / "train")
    )
    by_name = {os.path.basename(d["file_name"]): d for d in back}
    for d in dicts:
        got = by_name[os.path.basename(d["file_name"])]["annotations"]
        expected = [
            np.clip(x["bbox"], 0, [d["width"], d["height"]] * 2) for x in d["annotations"]
        ]
        np.testing.assert_allclose([g["bbox"] for g in got], expected, atol=1e-3)
    # A second write of the same records changes nothing; a name twice is refused.
    assert write_yolo_split(dicts, root, "train") == (3, 5)
    with pytest.raises(ValueError, match="not unique"):
        write_yolo_split(dicts + dicts[:1], root, "again")


def test_coco_json_for_evaluator_is_cached_and_scores_ground_truth(tmp_path, images):
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances
    import torch

    ann = _write(tmp_path / "ann.csv", "\n".join(SKU_ROWS) + "\n")
    name = _register(tmp_path, images, ann)
    meta = MetadataCatalog.get(name)
    json_file = meta.json_file  # converted on first use, before any DatasetCatalog.get
    assert json_file.startswith(str(tmp_path / "cache"))
    mtime = os.stat(json_file).st_mtime_ns
    assert meta.json_file == json_file and os.stat(json_file).st_mtime_ns == mtime
    coco = json.loads(open(json_file).read())
    assert [i["id"] for i in coco["images"]] == [1, 2, 3]
    assert coco["annotations"][0]["bbox"] == [1, 2, 9, 18]

    evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([x["bbox"] for x in d["annotations"]]))
        inst.scores = torch.ones(len(inst))
        inst.pred_classes = torch.zeros(len(inst), dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)

    _write(ann, "\n".join(SKU_ROWS[:2]) + "\n")
    assert meta.json_file != json_file  # stale cache never reused


def test_visualizer_draws_a_record(tmp_path, images):
    from detectron2.utils.visualizer import Visualizer

    ann = _write(tmp_path / "ann.csv", "\n".join(SKU_ROWS) + "\n")
    name = _register(tmp_path, images, ann)
    d = DatasetCatalog.get(name)[0]
    img = np.asarray(Image.open(d["file_name"]))
    out = Visualizer(img, MetadataCatalog.get(name)).draw_dataset_dict(d)
    assert out.get_image().shape == img.shape


def test_policy_and_config_keys():
    with pytest.raises(ValueError, match="Unknown bad-input policy"):
        register_retail_dataset("test_bad_policy", "images", "ann.csv", bad_input_policy="ignore")
    register_retail_dataset("test_default_policy", "images", "ann.csv")
    assert retail_dataset_spec("test_default_policy").bad_input_policy == "error"
    cfg = get_config(None)
    assert cfg.DATASETS.BAD_INPUT_POLICY == ""  # each dataset keeps its own
    assert cfg.DATASETS.COCO_JSON_CACHE_DIR == ""


def test_predefined_splits_registered_without_data():
    for name in (
        "sku110k_train",
        "sku110k_val",
        "sku110k_test",
        "benchmark_webmarket",
        "benchmark_gp",
        "benchmark_capg_gp",
        "benchmark_holoselecta",
        "benchmark_tobacco_shelves",
    ):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == ["object"]


def test_validate_dataset_reports_every_defect(tmp_path, images, capsys):
    from gaussian_retina.shelves import RetailDatasetSpec
    from gaussian_retina.shelves.validate import validate_retail_dataset

    ann = _write(tmp_path / "ann.csv", "\n".join(SKU_ROWS + ["a.jpg,1,2,x,4,object,60,40"]) + "\n")
    spec = RetailDatasetSpec("validate", str(images), str(ann))
    assert validate_retail_dataset(spec) == 1
    out = capsys.readouterr().out
    assert f"{ann}, line 5: non-numeric field (x2 = 'x')" in out
    assert "1  rows dropped: non-numeric field" in out

    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(noise).save(images / "big.jpg")
    data = (images / "big.jpg").read_bytes()
    (images / "big.jpg").write_bytes(data[: len(data) // 2])  # the header survives
    _write(ann, "\n".join(SKU_ROWS + ["big.jpg,1,2,30,40,object,640,480"]) + "\n")
    # A cut-short file is found from its missing end marker while the dataset loads, so
    # without decoding every image.
    assert validate_retail_dataset(spec) == 1
    out = capsys.readouterr().out
    assert "big.jpg: truncated JPEG" in out
    assert "1  images dropped: unreadable image" in out


def test_validate_dataset_names_boxes_labelled_twice(tmp_path, images, capsys):
    from gaussian_retina.shelves import RetailDatasetSpec
    from gaussian_retina.shelves.validate import boxes_labelled_twice, validate_retail_dataset

    rows = [
        "a.jpg,0,0,10,10,object,60,40",  # line 1
        "a.jpg,20,0,30,10,object,60,40",  # 2: a neighbour, no overlap
        "a.jpg,0,0,10,9,object,60,40",  # 3: line 1's box again, IoU 0.90
        "b.jpg,0,0,10,10,object,30,50",  # 4: the same box in another image is not a pair
        "a.jpg,20,0,30,6,object,60,40",  # 5: overlaps line 2 at IoU 0.60, under the limit
        "a.jpg,20,0,30,8,object,60,40",  # 6: overlaps line 2 at IoU 0.80 and line 5 at 0.75
    ]
    ann = _write(tmp_path / "ann.csv", "\n".join(rows) + "\n")
    spec = RetailDatasetSpec("validate", str(images), str(ann))
    assert validate_retail_dataset(spec) == 1
    out = capsys.readouterr().out
    assert "3  boxes labelled twice (IoU >= 0.75" in out
    assert f"{ann}, lines 1 and 3: the same product in a.jpg (IoU 0.90)" in out
    assert f"{ann}, lines 2 and 6: the same product in a.jpg (IoU 0.80)" in out
    assert f"{ann}, lines 5 and 6: the same product in a.jpg (IoU 0.75)" in out
    assert "lines 2 and 5" not in out and "lines 1 and 4" not in out

    from gaussian_retina.shelves.register import load_retail_table

    table, _, _ = load_retail_table(spec, policy="error")
    lines = {(int(table.box_loc[i]), int(table.box_loc[j])) for i, j, _ in boxes_labelled_twice(table)}
    assert lines == {(1, 3), (2, 6), (5, 6)}
    assert boxes_labelled_twice(table, iou_thresh=0.95) == []

    _write(ann, "\n".join(SKU_ROWS) + "\n")
    assert validate_retail_dataset(spec) == 0
    assert "labelled twice" not in capsys.readouterr().out
