"""The COCO json of a prediction run: its image and category ids, read back and by pycocotools."""

import json

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gaussian_retina.inference.writers import CocoResultsWriter, read_coco_results


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
