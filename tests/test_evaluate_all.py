"""
evaluate_all and subset (gaussian_retina/evaluation/benchmark.py): one model scored on several
registered datasets, each cut to its first images when asked, with the ones that cannot be
evaluated named and the others still scored.
"""

import logging
import uuid
from collections import OrderedDict

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from gaussian_retina.evaluation.benchmark import evaluate_all, subset

from common import get_config, write_image

BOXES = {1: [[10.0, 10.0, 50.0, 70.0], [60.0, 20.0, 110.0, 80.0]], 2: [[30.0, 5.0, 90.0, 60.0]]}


@pytest.fixture
def dataset(tmp_path):
    name = f"test_evaluate_all_{uuid.uuid4().hex[:8]}"
    dicts = []
    for image_id, boxes in BOXES.items():
        path = tmp_path / f"shelf{image_id}.png"
        write_image(path, 128, 96)
        annotations = [
            {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes
        ]
        dicts.append({"file_name": str(path), "image_id": image_id, "height": 96, "width": 128,
                      "annotations": annotations})
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["object"], evaluator_type="coco", note="kept")
    yield name
    for registered in [n for n in DatasetCatalog.list() if n.startswith(name)]:
        DatasetCatalog.remove(registered)
        if registered in MetadataCatalog.list():
            MetadataCatalog.remove(registered)


class _Shifted(torch.nn.Module):
    """Answers each image with its ground truth moved right by ``shift`` pixels."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.shift = shift
        self.input_sizes = set()

    def forward(self, batch):
        outputs = []
        for x in batch:
            self.input_sizes.add(tuple(x["image"].shape))
            boxes = torch.tensor(BOXES[x["image_id"]], dtype=torch.float32).reshape(-1, 4)
            boxes = boxes + torch.tensor([self.shift, 0, self.shift, 0])
            instances = Instances((x["height"], x["width"]))
            instances.pred_boxes = Boxes(boxes)
            instances.scores = torch.linspace(0.9, 0.8, len(boxes))
            instances.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
            outputs.append({"instances": instances})
        return outputs


def _cfg():
    return get_config(None, "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128)


def test_subset_is_the_first_images_with_the_metadata(dataset):
    assert subset(dataset, None) == dataset and subset(dataset, 0) == dataset
    MetadataCatalog.get(dataset).set(json_file="all_images.json")
    sub = subset(dataset, 1)
    assert sub == f"{dataset}_first1"
    assert [d["image_id"] for d in DatasetCatalog.get(sub)] == [1]
    meta = MetadataCatalog.get(sub)
    assert meta.thing_classes == ["object"] and meta.note == "kept"
    # Not the full set's COCO json: the evaluator writes the subset's own ground truth.
    assert not hasattr(meta, "json_file")
    # Asked again, the same subset (registering it twice would raise).
    assert subset(dataset, 1) == sub


def test_evaluate_all_scores_each_dataset_and_names_the_ones_it_cannot(dataset, tmp_path):
    empty = f"{dataset}_empty"
    DatasetCatalog.register(empty, lambda: [])
    broken = f"{dataset}_broken"

    def _missing_file():
        raise FileNotFoundError("annotations.csv")

    DatasetCatalog.register(broken, _missing_file)
    cfg = _cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE = 300
    names = [f"{dataset}_unregistered", dataset, empty, broken]
    model = _Shifted()
    rows, missing = evaluate_all(cfg, model, names, str(tmp_path))
    assert model.input_sizes == {(3, 96, 128)}  # the test mapper's input, not training's
    assert list(rows) == [dataset]
    assert rows[dataset] == OrderedDict(
        [("AP", 100.0), ("AP50", 100.0), ("AP75", 100.0), ("AR300", 100.0), ("AR300@50", 100.0)]
    )
    assert missing == OrderedDict(
        [
            (f"{dataset}_unregistered", "KeyError: 'not registered'"),
            (empty, "ValueError: no images"),
            (broken, "FileNotFoundError: annotations.csv"),
        ]
    )
    assert (tmp_path / dataset).is_dir()


def test_evaluate_all_scores_at_the_configs_detections_and_on_the_subset(dataset, tmp_path):
    cfg = _cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    rows, missing = evaluate_all(cfg, _Shifted(9.0), [dataset], str(tmp_path), max_images=1)
    assert not missing and list(rows[dataset]) == ["AP", "AP50", "AP75", "AR100", "AR100@50"]
    first_only = rows[dataset]
    # Moved 9 px right, image 1's boxes keep IoU 31 / 49 = 0.63 and 41 / 59 = 0.69 with
    # themselves: both match at IoU 0.5-0.6, one at 0.65, none from 0.7. The subset's ground
    # truth is its own, so image 2, not evaluated, is not a miss.
    assert first_only["AP50"] == pytest.approx(100.0)
    assert first_only["AP75"] == pytest.approx(0.0)
    assert first_only["AR100"] == pytest.approx(35.0)
    assert first_only["AR100@50"] == pytest.approx(100.0)
    assert (tmp_path / f"{dataset}_first1").is_dir()


def test_evaluate_all_logs_its_progress_and_reads_through_the_shelf_mapper(dataset, tmp_path,
                                                                          caplog):
    # A record whose photo is gone, under the "skip" policy: the shelf mapper feeds a blank
    # image, so its product counts as missed instead of stopping the evaluation.
    dicts = DatasetCatalog.get(dataset)
    dicts.append(dict(dicts[1], file_name=str(tmp_path / "gone.png"), image_id=3,
                      bad_input_policy="skip"))
    BOXES[3] = []
    logger = logging.getLogger("gaussian_retina.benchmark")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="gaussian_retina.benchmark"):
            cfg = _cfg()
            cfg.TEST.DETECTIONS_PER_IMAGE = 300
            rows, _ = evaluate_all(cfg, _Shifted(), [f"{dataset}_unregistered", dataset],
                                   str(tmp_path), max_images=None)
    finally:
        logger.removeHandler(caplog.handler)
        del BOXES[3]
    # Seen once through the handler and, where the logger propagates, once more through the root.
    assert list(dict.fromkeys(r.getMessage() for r in caplog.records)) == [
        f"[1/2] {dataset}_unregistered: missing (KeyError: 'not registered')",
        f"[2/2] {dataset}: 3 of 3 images",
    ]
    # Three of the four products found: the one on the missing photo is missed.
    assert rows[dataset]["AR300"] == pytest.approx(75.0)


def test_a_dataset_without_boxes_gives_a_row_of_nan(tmp_path):
    name = f"test_evaluate_all_empty_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "shelf.png"
    write_image(path, 128, 96)
    DatasetCatalog.register(name, lambda: [{"file_name": str(path), "image_id": 1, "height": 96,
                                            "width": 128, "annotations": []}])
    MetadataCatalog.get(name).set(thing_classes=["object"])
    try:
        BOXES[1], saved = [], BOXES[1]
        rows, missing = evaluate_all(_cfg(), _Shifted(), [name], str(tmp_path))
    finally:
        BOXES[1] = saved
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert not missing and all(v != v for v in rows[name].values())
