"""
A prediction run's files: the CSV per photo (SKU-110K's layout and a score) and the run's COCO
json with its image and category ids, each read back.
"""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gaussian_retina.inference.writers import (
    CSV_COLUMNS,
    CocoResultsWriter,
    detections_csv_rows,
    read_coco_results,
    read_detections_csv,
    write_detections_csv,
)


def _run():
    writer = CocoResultsWriter(["object", "price_tag"])
    writer.add("shelf_a.jpg", (400, 600), [[10, 20, 110, 220], [300, 40, 350, 90]], [0.9, 0.4],
               classes=[0, 1])
    writer.add("empty.jpg", (300, 300), np.zeros((0, 4)), [])
    writer.add("shelf_b.jpg", (480, 640), [[5.5, 6.25, 15.5, 30.75]], [0.75], classes=[1])
    return writer


def test_ids_name_the_photo_and_the_class_of_each_detection(tmp_path):
    data = _run().as_dict()
    file_of = {im["id"]: im["file_name"] for im in data["images"]}
    class_of = {c["id"]: c["name"] for c in data["categories"]}
    assert sorted(file_of.values()) == ["empty.jpg", "shelf_a.jpg", "shelf_b.jpg"]
    assert len(file_of) == 3 and len(class_of) == 2
    got = sorted(
        (file_of[a["image_id"]], class_of[a["category_id"]], a["bbox"], a["score"])
        for a in data["annotations"]
    )
    assert got == [
        ("shelf_a.jpg", "object", [10.0, 20.0, 100.0, 200.0], 0.9),
        ("shelf_a.jpg", "price_tag", [300.0, 40.0, 50.0, 50.0], 0.4),
        ("shelf_b.jpg", "price_tag", [5.5, 6.25, 10.0, 24.5], 0.75),
    ]
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in data["images"]}
    assert sizes == {"shelf_a.jpg": (400, 600), "empty.jpg": (300, 300), "shelf_b.jpg": (480, 640)}
    assert len({a["id"] for a in data["annotations"]}) == 3


def test_saved_json_reads_back_and_scores_with_pycocotools(tmp_path):
    writer = _run()
    path = tmp_path / "coco_results.json"
    writer.save(path)
    back = read_coco_results(path)
    assert back["empty.jpg"] == []
    assert [d["bbox"] for d in back["shelf_a.jpg"]] == [[10, 20, 110, 220], [300, 40, 350, 90]]
    names = {c["id"]: c["name"] for c in json.loads(path.read_text())["categories"]}
    assert [names[d["category_id"]] for d in back["shelf_a.jpg"]] == ["object", "price_tag"]
    assert [names[d["category_id"]] for d in back["shelf_b.jpg"]] == ["price_tag"]

    # As ground truth for itself, through pycocotools: every id must line up for AP 1.
    data = json.loads(path.read_text())
    gt = COCO()
    gt.dataset = {
        "images": data["images"], "categories": data["categories"],
        "annotations": [dict(a, area=a["bbox"][2] * a["bbox"][3], iscrowd=0)
                        for a in data["annotations"]],
    }
    gt.createIndex()
    dt = gt.loadRes([dict(a) for a in data["annotations"]])
    e = COCOeval(gt, dt, "bbox")
    e.evaluate()
    e.accumulate()
    e.summarize()
    assert e.stats[0] == 1.0


def test_csv_rows_round_boxes_to_integer_pixels_and_keep_four_score_digits():
    rows = detections_csv_rows(
        "p.jpg", (480, 640.0), [[0.4, 1.5, 2.5, 3.6], [-0.6, 10, 639.49, 479.51]],
        np.array([0.123456, 1.0]), ["object", "price_tag"], classes=np.array([1, 0]))
    # round() halves to even: 1.5 -> 2, 2.5 -> 2.
    assert rows == [
        ["p.jpg", 0, 2, 2, 4, "price_tag", 640, 480, "0.1235"],
        ["p.jpg", -1, 10, 639, 480, "object", 640, 480, "1.0000"],
    ]
    assert all(type(v) is int for row in rows for v in row[1:5] + row[6:8])
    assert detections_csv_rows("e.jpg", (5, 6), np.zeros((0, 4)), [], ["object"]) == []
    assert detections_csv_rows("f.jpg", (5, 6), [1, 2, 3, 4], [0.5], ["object"]) == [
        ["f.jpg", 1, 2, 3, 4, "object", 6, 5, "0.5000"]]


def test_csv_written_without_header_reads_back(tmp_path):
    path = tmp_path / "p.csv"
    write_detections_csv(path, "a b,c.jpg", (50, 60), [[1, 2, 3, 4], [5.4, 6, 7, 8.6]],
                         [0.5, 0.25], ["object", "tag"], classes=[0, 1])
    assert path.read_bytes() == (b'"a b,c.jpg",1,2,3,4,object,60,50,0.5000\r\n'
                                 b'"a b,c.jpg",5,6,7,9,tag,60,50,0.2500\r\n')
    assert read_detections_csv(path) == [
        {"image_name": "a b,c.jpg", "box": [1.0, 2.0, 3.0, 4.0], "class": "object",
         "image_width": 60, "image_height": 50, "score": 0.5},
        {"image_name": "a b,c.jpg", "box": [5.0, 6.0, 7.0, 9.0], "class": "tag",
         "image_width": 60, "image_height": 50, "score": 0.25},
    ]


def test_read_detections_csv_takes_sku110k_files_and_names_bad_lines(tmp_path):
    path = tmp_path / "sku.csv"
    path.write_text(",".join(CSV_COLUMNS[:-1]) + "\nx.jpg,1,2,3.5,4,object,10,20\n")
    assert read_detections_csv(path) == [
        {"image_name": "x.jpg", "box": [1.0, 2.0, 3.5, 4.0], "class": "object",
         "image_width": 10, "image_height": 20, "score": 1.0}]
    path.write_text(",".join(CSV_COLUMNS) + "\nx.jpg,1,2,3,4,object,10,20,0.5\n")
    assert [r["score"] for r in read_detections_csv(path)] == [0.5]
    # A header-like row later in the file is a bad row, not a header.
    path.write_text("x.jpg,1,2,3,4,object,10,20,0.5\n" + ",".join(CSV_COLUMNS) + "\n")
    with pytest.raises(ValueError, match=r"sku\.csv, line 2: could not convert string to float"):
        read_detections_csv(path)
    for text, message in [
        ("x.jpg,1,2,3,4,object,10\n", r"sku\.csv, line 1: 7 columns, expected 9$"),
        ("x.jpg,1,2,3,4,object,10,20,0.5\nx.jpg,1,2,3,4,object,10,20,0.5,9\n",
         r"sku\.csv, line 2: 10 columns, expected 9$"),
        ("x.jpg,1,2,3,4,object,10.5,20\n", r"sku\.csv, line 1: invalid literal for int\(\)"),
        ("x.jpg,1,2,3,4,object,10,20,high\n", r"sku\.csv, line 1: could not convert string"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_detections_csv(path)
    path.write_text("")
    assert read_detections_csv(path) == []


def test_coco_results_ids_rounding_and_categories(tmp_path):
    writer = CocoResultsWriter(["object", "tag"])
    assert writer.add("a.jpg", (10.0, 20.0), [1.004, 2.005, 3.5, 4.123456], [0.1234567]) == 1
    assert writer.add("b.jpg", (5, 6), [[0, 0, 1, 1], [2, 2, 4, 5]], np.array([0.5, 0.25]),
                      classes=np.array([1, 0])) == 2
    assert writer.as_dict() == {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10},
                   {"id": 2, "file_name": "b.jpg", "width": 6, "height": 5}],
        "categories": [{"id": 1, "name": "object"}, {"id": 2, "name": "tag"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1,
             "bbox": [1.0, round(2.005, 2), 2.5, round(4.123456 - 2.005, 2)],
             "score": 0.12346},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0.0, 0.0, 1.0, 1.0],
             "score": 0.5},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [2.0, 2.0, 2.0, 3.0],
             "score": 0.25},
        ],
    }
    assert all(type(im["width"]) is int and type(im["height"]) is int
               for im in writer.as_dict()["images"])
    path = tmp_path / "r.json"
    writer.save(path)
    assert json.loads(path.read_text()) == writer.as_dict()
    y1 = round(2.005, 2)
    assert read_coco_results(path) == {
        "a.jpg": [{"bbox": [1.0, y1, 3.5, y1 + round(4.123456 - 2.005, 2)],
                   "score": 0.12346, "category_id": 1}],
        "b.jpg": [{"bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5, "category_id": 2},
                  {"bbox": [2.0, 2.0, 4.0, 5.0], "score": 0.25, "category_id": 1}],
    }
