"""
DenseCOCOEvaluator: the paper's columns (AP, AP50, AP75 at 300 detections, AR300, AR300@50),
checked against numbers worked out by hand and against pycocotools' official COCOeval.
"""

import csv
import json
import logging
import uuid
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine.hooks import EvalHook
from detectron2.evaluation.coco_evaluation import COCOEvaluator, COCOevalMaxDets
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gaussian_retina.evaluation import DenseCOCOEvaluator, paper_metric_names, paper_metrics

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = (1000, 1000)  # (H, W) of the hand-made images


def _register(images):
    """
    images: list of lists of XYXY gt boxes, one list per image. Returns a new dataset name.
    """
    name = f"test_dense_eval_{uuid.uuid4().hex[:8]}"
    dicts = [
        {
            "file_name": f"img{i}.jpg",
            "image_id": i,
            "height": SIZE[0],
            "width": SIZE[1],
            "annotations": [
                {"bbox": list(map(float, b)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                for b in boxes
            ],
        }
        for i, boxes in enumerate(images)
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["object"])
    return name


def _outputs(boxes, scores, image_size=SIZE):
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    return {"instances": inst}


def _evaluate(dataset, predictions, tmp_path, **kwargs):
    """
    predictions: list of (boxes, scores), one per image, in image_id order.
    """
    evaluator = DenseCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path), **kwargs)
    evaluator.reset()
    for image_id, (boxes, scores) in enumerate(predictions):
        evaluator.process([{"image_id": image_id}], [_outputs(boxes, scores)])
    return evaluator.evaluate()["bbox"]


# One image, four 100x100 objects. Detections, best score first:
#   d1 on g1 with IoU 1.0: a true positive at every IoU threshold 0.50:0.95;
#   d2 on g2 with IoU 0.62 (height 62 of 100): a true positive at 0.50, 0.55, 0.60 only;
#   d3 on nothing: a false positive;
#   d4 on g3 with IoU 0.82: a true positive at 0.50 ... 0.80 (7 thresholds);
#   g4 is never found.
# COCO's AP averages precision, made monotone, at 101 recall points 0, 0.01, ..., 1:
#   t <= 0.60: TP TP FP TP -> precision 1 up to recall 1/2, 3/4 up to 3/4:
#              AP = (51 * 1 + 25 * 0.75) / 101 = 69.75 / 101
#   0.65 <= t <= 0.80: TP FP FP TP -> 1 up to 1/4, 1/2 up to 1/2: (26 + 25 * 0.5) / 101 = 38.5 / 101
#   t >= 0.85: TP FP FP FP -> 1 up to 1/4: 26 / 101
# AP = (3 * 69.75 + 4 * 38.5 + 3 * 26) / 1010; recall is 3/4, 1/2, 1/4 on 3, 4, 3 thresholds.
HAND_GT = [[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100], [600, 0, 700, 100]]
HAND_DETS = (
    [[0, 0, 100, 100], [200, 0, 300, 62], [800, 800, 900, 900], [400, 0, 500, 82]],
    [0.9, 0.8, 0.7, 0.6],
)
HAND_EXPECTED = {
    "AP": 100 * (3 * 69.75 + 4 * 38.5 + 3 * 26) / 1010,
    "AP50": 100 * 69.75 / 101,
    "AP75": 100 * 38.5 / 101,
    "AR300": 100 * (3 * 0.75 + 4 * 0.5 + 3 * 0.25) / 10,
    "AR300@50": 75.0,
}


@pytest.mark.parametrize("use_fast_impl", [True, False], ids=["cpp", "official"])
def test_hand_made_case(tmp_path, use_fast_impl):
    dataset = _register([HAND_GT])
    results = _evaluate(dataset, [HAND_DETS], tmp_path, use_fast_impl=use_fast_impl)
    for name, expected in HAND_EXPECTED.items():
        assert results[name] == pytest.approx(expected, abs=1e-6), name
    assert list(paper_metrics(results)) == ["AP", "AP50", "AP75", "AR300", "AR300@50"]


def test_detections_beyond_100_count(tmp_path):
    # One object found only by the 150th detection: 149 higher-scored false positives first.
    # With 300 detections per image: recall 1 at every IoU, precision 1/150 at that recall,
    # so AP = 100/150 and AR300 = 100. With COCO's 100 it is never seen: everything is 0.
    dataset = _register([[[500, 500, 600, 600]]])
    fps = [[10 * i, 0, 10 * i + 8, 8] for i in range(149)]
    scores = list(np.linspace(0.99, 0.5, 149)) + [0.1]
    dets = (fps + [[500, 500, 600, 600]], scores)

    dense = _evaluate(dataset, [dets], tmp_path / "300")
    assert dense["AP"] == pytest.approx(100 / 150, abs=1e-6)
    assert dense["AP50"] == pytest.approx(100 / 150, abs=1e-6)
    assert dense["AR300"] == pytest.approx(100.0)
    assert dense["AR300@50"] == pytest.approx(100.0)

    coco = _evaluate(dataset, [dets], tmp_path / "100", max_dets_per_image=100)
    assert coco["AP"] == 0.0 and coco["AR100"] == 0.0 and coco["AR100@50"] == 0.0


def test_keeps_the_cpp_implementation(tmp_path):
    # COCOEvaluator alone falls back to the pure-Python COCOeval for maxDets != 100.
    dataset = _register([HAND_GT])
    with mock.patch.object(
        COCOeval_opt, "accumulate", autospec=True, side_effect=COCOeval_opt.accumulate
    ) as accumulate:
        _evaluate(dataset, [HAND_DETS], tmp_path)
    assert accumulate.call_count == 1


def test_box_only_ground_truth_scores_boxes_of_a_mask_model(tmp_path):
    # Mask R-CNN on the shelf datasets: predictions carry masks, the ground truth has none.
    # COCOEvaluator's default would score "segm" too and fail on the missing segmentations.
    dataset = _register([HAND_GT])
    evaluator = DenseCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    outputs = _outputs(*HAND_DETS)
    masks = torch.zeros(len(HAND_DETS[1]), *SIZE, dtype=torch.bool)
    for mask, (x1, y1, x2, y2) in zip(masks, HAND_DETS[0]):
        mask[y1:y2, x1:x2] = True
    outputs["instances"].pred_masks = masks
    evaluator.process([{"image_id": 0}], [outputs])
    results = evaluator.evaluate()
    assert set(results) == {"bbox"}
    assert results["bbox"]["AP50"] == pytest.approx(HAND_EXPECTED["AP50"])


def test_no_detections_gives_nan(tmp_path):
    dataset = _register([HAND_GT])
    results = _evaluate(dataset, [([], [])], tmp_path)
    assert set(paper_metric_names()) <= set(results)
    assert all(np.isnan(v) for v in paper_metrics(results).values())


@pytest.mark.parametrize("use_fast_impl, max_dets", [(True, 300), (False, 300), (True, 100)])
def test_paper_row_is_logged(tmp_path, use_fast_impl, max_dets):
    dataset = _register([HAND_GT])
    # Listen on the evaluator's logger itself, whether or not it propagates to the root (Detectron2's
    # setup_logger, run by any earlier training test, stops it), so each record is seen once.
    evaluator_logger = logging.getLogger("detectron2.evaluation.coco_evaluation")
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    level = evaluator_logger.level
    evaluator_logger.addHandler(handler)
    evaluator_logger.setLevel(logging.INFO)
    try:
        _evaluate(dataset, [HAND_DETS], tmp_path, use_fast_impl=use_fast_impl,
                  max_dets_per_image=max_dets)
    finally:
        evaluator_logger.removeHandler(handler)
        evaluator_logger.setLevel(level)
    rows = [r.getMessage() for r in records if "paper's columns" in r.getMessage()]
    assert len(rows) == 1
    title, header, _, values = rows[0].splitlines()[:4]
    api = "unofficial C++" if use_fast_impl else "official"
    assert title == (
        f"bbox results in the paper's columns ({max_dets} detections per image, {api} COCO API):"
    )
    assert [h.strip() for h in header.strip("|").split("|")] == paper_metric_names(max_dets)
    assert float(values.strip("|").split("|")[3]) == pytest.approx(HAND_EXPECTED["AR300"], abs=1e-3)


def test_eval_hook_puts_the_metrics_in_event_storage(tmp_path):
    # What DefaultTrainer does with test() results: EvalHook -> EventStorage, whose
    # writers (TensorboardXWriter, JSONWriter) then log every scalar.
    dataset = _register([HAND_GT])
    hook = EvalHook(0, lambda: {"bbox": _evaluate(dataset, [HAND_DETS], tmp_path)})
    with EventStorage(start_iter=0) as storage:
        hook.trainer = mock.Mock(iter=9, max_iter=10, storage=storage)
        hook.after_train()
        latest = storage.latest()
    for name, expected in HAND_EXPECTED.items():
        assert latest[f"bbox/{name}"][0] == pytest.approx(expected, abs=1e-6)


def _read_tobacco(max_images):
    boxes = defaultdict(list)
    with open(DATA / "tobacco_shelves" / "annotations.csv", newline="") as f:
        for row in csv.reader(f):
            boxes[row[0]].append([float(v) for v in row[1:5]])
    return [boxes[name] for name in sorted(boxes)[:max_images]]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real shelf data not found at {DATA}")
def test_matches_pycocotools_on_real_dense_shelves(tmp_path):
    """
    Real box layouts (tobacco_shelves), with noisy, partly missing detections and enough false
    positives for more than 100 detections per image: the evaluator's C++ path against
    pycocotools' official COCOeval.
    """
    images = _read_tobacco(max_images=8)
    rng = np.random.default_rng(0)
    predictions = []
    for gt in images:
        gt = np.array(gt)
        kept = gt[rng.random(len(gt)) < 0.85]
        size = np.tile(kept[:, 2:] - kept[:, :2], 2)
        found = kept + rng.normal(0.0, 0.06, kept.shape) * size
        x, y = rng.uniform(0, 2000, (2, 130))
        w, h = rng.uniform(100, 500, (2, 130))
        false = np.stack([x, y, x + w, y + h], axis=1)
        boxes = np.concatenate([found, false])
        predictions.append((boxes.tolist(), rng.random(len(boxes)).tolist()))
    assert min(len(b) for b, _ in predictions) > 100

    results = _evaluate(_register(images), predictions, tmp_path)

    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in range(len(images))],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [
            {
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]),
            }
            for i, boxes in enumerate(images)
            for b in boxes
        ],
    }
    for k, ann in enumerate(gt.dataset["annotations"]):
        ann["id"] = k + 1
    gt.createIndex()
    dt = gt.loadRes(
        [
            {
                "image_id": i,
                "category_id": 1,
                "score": s,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            }
            for i, (boxes, scores) in enumerate(predictions)
            for b, s in zip(boxes, scores)
        ]
    )

    def official(cls, iou_thrs=None):
        e = cls(gt, dt, "bbox")
        e.params.maxDets = [1, 10, 300]
        if iou_thrs is not None:
            e.params.iouThrs = np.array(iou_thrs)
        e.evaluate()
        e.accumulate()
        e.summarize()
        return 100 * e.stats

    stats = official(COCOeval)  # stats[0] is AP at 100 (not evaluated here), the rest at 300
    expected = {
        "AP": official(COCOevalMaxDets)[0],  # pycocotools' evaluate/accumulate, AP at maxDets[2]
        "AP50": stats[1],
        "AP75": stats[2],
        "AR300": stats[8],
        "AR300@50": official(COCOeval, iou_thrs=[0.5])[8],
    }
    assert 5 < expected["AP"] < 95 and expected["AR300"] < expected["AR300@50"]
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-4), name


def test_results_json_carries_the_datasets_own_image_and_category_ids(tmp_path):
    # Image ids that are neither 0-based nor consecutive, and a category id that is not the
    # contiguous one the model predicts: the saved results must speak the dataset's ids.
    name = f"test_dense_eval_ids_{uuid.uuid4().hex[:8]}"
    gt = {17: [[0, 0, 100, 100], [200, 0, 300, 100]], 42: [[500, 500, 600, 650]]}
    dicts = [
        {
            "file_name": f"img{i}.jpg", "image_id": i, "height": SIZE[0], "width": SIZE[1],
            "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                            for b in boxes],
        }
        for i, boxes in gt.items()
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["object"], thing_dataset_id_to_contiguous_id={7: 0})
    evaluator = DenseCOCOEvaluator(name, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    for image_id in (42, 17):  # not in the dataset's order
        boxes = gt[image_id]
        evaluator.process([{"image_id": image_id}], [_outputs(boxes, [0.9] * len(boxes))])
    results = evaluator.evaluate()["bbox"]
    assert results["AP"] == pytest.approx(100.0)  # every detection met its own image's boxes

    saved = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert sorted((r["image_id"], tuple(r["bbox"])) for r in saved) == sorted(
        (i, (x1, y1, x2 - x1, y2 - y1)) for i, boxes in gt.items() for x1, y1, x2, y2 in boxes
    )
    assert {r["category_id"] for r in saved} == {7}
    cached = COCO(MetadataCatalog.get(name).json_file)
    assert sorted(cached.getImgIds()) == [17, 42] and cached.getCatIds() == [7]


def _coco_pair(rng, num_images=6, sides=(20, 60, 150)):
    """
    Two categories over small, medium and large boxes (COCO's areas), category 2 without small
    ones, so that some of COCO's slices are undefined; noisy detections and false positives.
    """
    gt = COCO()
    anns, dets = [], []
    for i in range(num_images):
        for k in range(30):
            side = sides[k % len(sides)]
            category = 1 + (k % 2) if side > 20 else 1
            x, y = rng.uniform(0, 800, 2)
            anns.append({"image_id": i, "category_id": category, "iscrowd": 0,
                         "bbox": [x, y, side, side], "area": side * side})
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08 * side, 4)
                dets.append({"image_id": i, "category_id": category, "score": rng.random(),
                             "bbox": [x + jitter[0], y + jitter[1], side + jitter[2],
                                      side + jitter[3]]})
        for _ in range(40):
            x, y, w = *rng.uniform(0, 800, 2), rng.uniform(10, 200)
            dets.append({"image_id": i, "category_id": int(rng.integers(1, 3)),
                         "score": rng.random() * 0.5, "bbox": [x, y, w, w]})
    for k, ann in enumerate(anns):
        ann["id"] = k + 1
    gt.dataset = {"images": [{"id": i} for i in range(num_images)],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                  "annotations": anns}
    gt.createIndex()
    return gt, gt.loadRes(dets)


@pytest.mark.parametrize("max_dets, sides", [(20, (20, 60, 150)), (300, (20, 60, 150)),
                                             (300, (60, 150))])
def test_dense_stats_are_cocos_own_summary_at_the_limit(max_dets, sides):
    from gaussian_retina.evaluation.dense_coco_evaluation import _dense_stats

    gt, dt = _coco_pair(np.random.default_rng(max_dets), sides=sides)

    def official(iou_thrs=None):
        e = COCOevalMaxDets(gt, dt, "bbox")
        e.params.maxDets = [1, 10, max_dets]
        if iou_thrs is not None:
            e.params.iouThrs = np.array(iou_thrs)
        e.evaluate()
        e.accumulate()
        e.summarize()
        return e

    e = official()
    stats, ar50 = _dense_stats(e, max_dets)
    # Without small products, their two slices are undefined (-1), as in COCO's summary.
    assert (stats == -1).sum() == (0 if 20 in sides else 2) and 0 < stats[0] < 1
    np.testing.assert_allclose(stats, e.stats[:12], atol=1e-12)
    assert ar50 == pytest.approx(official(iou_thrs=[0.5]).stats[8], abs=1e-12)


def test_max_dets_none_means_cocos_100(tmp_path):
    dataset = _register([HAND_GT])
    default = _evaluate(dataset, [HAND_DETS], tmp_path / "none", max_dets_per_image=None)
    hundred = _evaluate(dataset, [HAND_DETS], tmp_path / "100", max_dets_per_image=100)
    assert set(paper_metric_names(100)) <= set(default)
    assert paper_metrics(default, 100) == paper_metrics(hundred, 100)


def test_the_official_implementation_when_asked(tmp_path):
    dataset = _register([HAND_GT])
    with mock.patch.object(
        COCOeval_opt, "accumulate", autospec=True, side_effect=COCOeval_opt.accumulate
    ) as accumulate:
        _evaluate(dataset, [HAND_DETS], tmp_path, use_fast_impl=False)
    assert accumulate.call_count == 0


def test_two_categories_get_their_own_ap(tmp_path):
    name = f"test_dense_eval_two_{uuid.uuid4().hex[:8]}"
    dicts = [{
        "file_name": "img0.jpg", "image_id": 0, "height": SIZE[0], "width": SIZE[1],
        "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c}
                        for b, c in zip(HAND_GT, [0, 0, 1, 1])],
    }]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["pack", "carton"])
    evaluator = DenseCOCOEvaluator(name, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    outputs = _outputs(HAND_GT[:3], [0.9, 0.8, 0.7])
    outputs["instances"].pred_classes = torch.tensor([0, 0, 1])
    evaluator.process([{"image_id": 0}], [outputs])
    results = evaluator.evaluate()["bbox"]
    # Packs: both found exactly; cartons: one of two, so recall 1/2 at every IoU.
    assert results["AP-pack"] == pytest.approx(100.0)
    assert results["AP-carton"] == pytest.approx(100 * 51 / 101, abs=1e-6)
    assert results["AR300"] == pytest.approx(75.0)
    # Written beside the predictions, as returned.
    saved = json.loads((tmp_path / "bbox_metrics.json").read_text())
    assert saved == pytest.approx(results, nan_ok=True)


def _accumulated(gt, dt):
    e = COCOeval_opt(gt, dt, "bbox")
    e.params.maxDets = [1, 10, 100, 300]
    e.evaluate()
    e.accumulate()
    return e


def test_recall_without_ground_truth_is_nan(tmp_path):
    # COCO marks it -1, as every slice without ground truth; the columns say NaN, not -100.
    dataset = _register([HAND_GT])
    evaluator = DenseCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    gt, dt = _coco_pair(np.random.default_rng(0), num_images=1)
    dets = gt.dataset["annotations"]
    gt.dataset["annotations"] = []
    gt.createIndex()
    dt = gt.loadRes([dict(d, score=0.5) for d in dets])
    results = evaluator._derive_coco_results(_accumulated(gt, dt), "bbox")
    assert all(np.isnan(v) for v in paper_metrics(results).values())


def test_keypoints_and_masks_go_the_right_way(tmp_path):
    # Keypoints keep COCO's protocol (the parent's results); masks get the dense columns too.
    dataset = _register([HAND_GT])
    evaluator = DenseCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    e = _accumulated(*_coco_pair(np.random.default_rng(0), num_images=2))
    e.stats = np.linspace(0.1, 0.9, 12)
    expected = COCOEvaluator._derive_coco_results(evaluator, e, "keypoints", ["a", "b"])
    assert set(expected) >= {"AP", "APm", "AP-a", "AP-b"} and expected["AP"] == pytest.approx(10)
    assert evaluator._derive_coco_results(e, "keypoints", ["a", "b"]) == expected
    masks = evaluator._derive_coco_results(e, "segm", ["a", "b"])
    assert set(paper_metric_names()) | {"AP-a", "AP-b"} <= set(masks)
    assert (tmp_path / "segm_metrics.json").is_file()


@pytest.mark.parametrize("per_image, max_dets, warned", [(100, 300, True), (101, 300, False),
                                                         (100, 100, False), (99, 300, False)])
def test_a_model_capped_at_100_detections_is_named(tmp_path, caplog, per_image, max_dets, warned):
    dataset = _register([HAND_GT])
    boxes = [[5 * i, 500, 5 * i + 40, 540] for i in range(per_image)]
    evaluator = DenseCOCOEvaluator(dataset, distributed=False, output_dir=str(tmp_path),
                                   max_dets_per_image=max_dets)
    evaluator.reset()
    evaluator.process([{"image_id": 0}], [_outputs(boxes, list(np.linspace(0.9, 0.1, per_image)))])
    with mock.patch.object(evaluator._logger, "warning") as warning:
        evaluator.evaluate()
    messages = [c.args[0] for c in warning.call_args_list]
    expected = (
        f"No image has more than 100 detections while {max_dets} are evaluated: set "
        f"TEST.DETECTIONS_PER_IMAGE to {max_dets} for the protocol's AR."
    )
    assert (expected in messages) == warned


def test_paper_metrics_name_what_is_missing_as_nan():
    row = paper_metrics({"AP": 50.0, "AR20": 40.0}, 20)
    assert list(row) == ["AP", "AP50", "AP75", "AR20", "AR20@50"]
    assert row["AP"] == 50.0 and row["AR20"] == 40.0
    assert np.isnan(row["AP50"]) and np.isnan(row["AR20@50"])


def test_a_limit_under_100_is_scored_at_that_limit(tmp_path):
    # One object found only by the 30th detection: seen at 30 detections per image, not at 20.
    dataset = _register([[[500, 500, 600, 600]]])
    fps = [[10 * i, 0, 10 * i + 8, 8] for i in range(29)]
    dets = (fps + [[500, 500, 600, 600]], list(np.linspace(0.99, 0.5, 29)) + [0.1])
    assert _evaluate(dataset, [dets], tmp_path / "20", max_dets_per_image=20)["AR20"] == 0.0
    assert _evaluate(dataset, [dets], tmp_path / "30", max_dets_per_image=30)["AR30"] == 100.0
