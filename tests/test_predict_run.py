"""
A prediction run's files (gaussian_retina.inference.runner, run_outputs, calibration) and the
command's interface (gaussian_retina.predict): names that never collide, SKU-110K's CSV layout,
a run stopped midway and resumed ending with the files of an uninterrupted run, counts past the
detection cap, the calibration cache, devices, a missing input and a missing scale set.
"""

import json
import logging
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from common import ROOT, TINY_SCENE_PARAMS, get_config, tiny_synthetic_split
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.inference import (
    ShelfPredictor,
    calibrate_counts,
    find_images,
    input_root,
    output_names,
    photo_counts,
    read_detections_csv,
    run_prediction,
    write_detections_csv,
)
from gaussian_retina.inference.calibration import calibration_cache_dir
from gaussian_retina.inference.counting import (
    calibrate_threshold,
    count_detections,
    count_map_peaks,
)
from gaussian_retina.predict import get_parser, main, setup_cfg


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    cfg = get_config("synthetic/gln_R18.yaml")
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    # A random head scores everything near the focal prior (0.01); let detections through.
    m.test_score_thresh = 0.0
    m.test_topk_candidates = 100
    return m


def _predictor(model, **kw):
    return ShelfPredictor(model=model, test_size=(48, 64), tiling="off", batch_size=1, **kw)


def _photos(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    for n in names:
        path = folder / n
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), (rng.random((60, 80, 3)) * 255).astype(np.uint8))
    return folder


def test_output_names_keep_the_path_under_the_input_root(tmp_path):
    photos = _photos(
        tmp_path / "photos", ["s1/IMG_1.jpg", "s2/IMG_1.jpg", "s3/IMG_1_2.jpg", "s1/IMG_1.png"]
    )
    files = find_images([str(photos)])
    names = dict(zip(files, output_names(files, input_root([str(photos)]))))
    by_image = {image_name: name for name, image_name in names.values()}
    assert by_image == {
        "s1/IMG_1.jpg": "s1/IMG_1.jpg",  # s1/IMG_1.png is there too: the extension stays
        "s1/IMG_1.png": "s1/IMG_1.png",
        "s2/IMG_1.jpg": "s2/IMG_1",
        "s3/IMG_1_2.jpg": "s3/IMG_1_2",
    }
    # Two inputs: named under their common folder, so their photos of one name stay apart.
    two = [str(photos / "s1"), str(photos / "s2/*.jpg")]
    assert [n for n, _ in output_names(find_images(two), input_root(two))] == [
        "s1/IMG_1.jpg",
        "s1/IMG_1.png",
        "s2/IMG_1",
    ]


def test_files_left_out_by_extension_are_named(tmp_path, caplog):
    photos = _photos(tmp_path / "photos", ["a.jpg", "s/B.JPG"])
    for name in ("s/c.heic", "d.gif", "labels/d.txt", ".DS_Store", ".cache/e.bin"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes(b"x")
    logger = logging.getLogger("gaussian_retina.predict")
    logger.addHandler(caplog.handler)  # Detectron2's setup_logger stops propagation
    try:
        with caplog.at_level(logging.WARNING, logger="gaussian_retina.predict"):
            files = find_images([str(photos)])
            assert [os.path.relpath(f, photos) for f in files] == ["a.jpg", "s/B.JPG"]
            # Hidden files aside, every other file is named, in one line.
            (line,) = {r.getMessage() for r in caplog.records}  # once, whichever way it came
            caplog.clear()
            # A photo named explicitly, or a pattern's, is no folder's: nothing is left out.
            find_images([str(photos / "d.gif"), str(photos / "*.jpg")])
            assert not caplog.records
    finally:
        logger.removeHandler(caplog.handler)
    assert line.startswith("left out 3 file(s)") and "1 .gif, 1 .heic, 1 .txt" in line
    for name in ("d.gif", "labels/d.txt", "s/c.heic", ".DS_Store", "e.bin"):
        assert (name in line) == (name == "d.gif"), name  # the first one is the example


def test_csv_is_sku110k_layout_with_a_score(tmp_path):
    path = tmp_path / "a.csv"
    boxes = np.array([[10.4, 20.6, 110.0, 220.5], [0.0, 0.0, 5.5, 6.0]])
    write_detections_csv(path, "s/a.jpg", (480, 640), boxes, [0.91234, 0.05], ["object"])
    assert path.read_text().splitlines() == [
        "s/a.jpg,10,21,110,220,object,640,480,0.9123",
        "s/a.jpg,0,0,6,6,object,640,480,0.0500",
    ]
    # Every pixel field parses with int(), as keras-retinanet's SKU-110K reader does.
    for line in path.read_text().splitlines():
        [int(v) for v in line.split(",")[1:5] + line.split(",")[6:8]]
    assert [r["box"] for r in read_detections_csv(path)] == [[10, 21, 110, 220], [0, 0, 6, 6]]


def _run_files(out):
    files = {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix in (".csv", ".json") and p.name not in ("summary.json",)
    }
    summary = json.loads((out / "summary.json").read_text())
    for p in summary["photos"]:
        p.pop("seconds")
    summary.pop("seconds_total"), summary.pop("seconds_per_photo")
    # PIL's reason names an object's address, which differs between two reads.
    summary["skipped"] = [s["file"] for s in summary["skipped"]]
    return files, summary


def test_a_run_stopped_midway_resumes_to_the_files_of_a_whole_run(tmp_path, model, monkeypatch):
    photos = _photos(tmp_path / "photos", [f"shelf{i % 2}/p{i}.jpg" for i in range(5)])
    (photos / "shelf1/broken.jpg").write_bytes(b"not a jpeg")
    files = find_images([str(photos)])
    calibration = {"count_threshold": 0.012, "peak_threshold": 0.5}
    kw = dict(count_calibration=calibration, conf=0.0, progress=False, run_info={"model": "x"})

    whole = tmp_path / "whole"
    run_prediction(_predictor(model), files, str(whole), **kw)

    class Crash(RuntimeError):
        pass

    real = ShelfPredictor.__call__
    calls = []

    def crash_on_the_fourth_batch(self, images):
        calls.append(len(images))
        if len(calls) == 4:
            raise Crash("CUDA out of memory")
        return real(self, images)

    monkeypatch.setattr(ShelfPredictor, "__call__", crash_on_the_fourth_batch)
    stopped = tmp_path / "stopped"
    with pytest.raises(Crash):
        run_prediction(_predictor(model), files, str(stopped), **kw)
    # What was done before the crash is on disk: three photos and the broken one.
    done = [json.loads(line)["name"] for line in (stopped / "photos.jsonl").read_text().splitlines()]
    assert done == ["shelf0/p0", "shelf0/p2", "shelf0/p4", "shelf1/broken"]
    assert len((stopped / "counts.csv").read_text().splitlines()) == 1 + 3
    # A line cut short by a kill is dropped, and its photo predicted again.
    with open(stopped / "photos.jsonl", "a") as f:
        f.write('{"name": "shelf1/p3", "image_na')

    seen = []
    monkeypatch.setattr(
        ShelfPredictor, "__call__", lambda self, images: seen.append(len(images)) or real(self, images)
    )
    run_prediction(_predictor(model), files, str(stopped), **kw)
    assert sum(seen) == 2  # only the photos not done
    whole_files, whole_summary = _run_files(whole)
    stopped_files, stopped_summary = _run_files(stopped)
    assert stopped_files == whole_files
    assert stopped_summary == whole_summary
    assert whole_summary["photos_done"] == 5 and whole_summary["photos_skipped"] == 1
    assert sorted(whole_files) == sorted(
        ["coco_results.json", "counts.csv", "detections.csv", "run.json"]
        + [f"detections/shelf{i % 2}/p{i}.csv" for i in range(5)]
    )
    # The run's CSV is the photos' CSVs, in the photos' order.
    assert whole_files["detections.csv"] == b"".join(
        whole_files[f"detections/shelf{i % 2}/p{i}.csv"] for i in (0, 2, 4, 1, 3)
    )
    # Resuming with other settings would mix two runs: refused, saying which setting differs.
    with pytest.raises(ValueError, match=r"other settings \(conf\)"):
        run_prediction(_predictor(model), files, str(stopped), **dict(kw, conf=0.5))


def test_counts_are_not_capped_by_the_detection_cap(model):
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    pred = _predictor(model, max_detections=20)([image])[0]
    assert len(pred.scores) == 20 and len(pred.all_scores) > 20
    assert photo_counts(pred, 0.0, None)["products"] == len(pred.all_scores)


def test_calibration_is_cached_by_weights_and_dataset(tmp_path, model, monkeypatch):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights, as far as the cache key goes")
    predictor = _predictor(model)
    with tiny_synthetic_split("calib_tiny", tmp_path / "data", TINY_SCENE_PARAMS, 3):
        first = calibrate_counts(
            predictor, "calib_tiny", "BGR", weights=str(weights), cache_dir=tmp_path / "c"
        )
        monkeypatch.setattr(
            ShelfPredictor, "__call__", lambda *a: pytest.fail("predicted despite the cache")
        )
        again = calibrate_counts(
            predictor, "calib_tiny", "BGR", weights=str(weights), cache_dir=tmp_path / "c"
        )
        assert again.pop("cached") and not first.pop("cached") and again == first
        weights.write_bytes(b"other weights")  # another checkpoint at the same path
        with pytest.raises(pytest.fail.Exception, match="despite the cache"):
            calibrate_counts(
                predictor, "calib_tiny", "BGR", weights=str(weights), cache_dir=tmp_path / "c"
            )


def test_calibration_picks_the_thresholds_of_least_count_error(tmp_path, model, monkeypatch):
    predictor = _predictor(model)
    with tiny_synthetic_split("calib_values", tmp_path / "data", TINY_SCENE_PARAMS, 3):
        records = DatasetCatalog.get("calib_values")
        preds = [predictor([read_shelf_image(r, "BGR")])[0] for r in records]
        true = [len(r["annotations"]) for r in records]
        thr, mae = calibrate_threshold([p.all_scores for p in preds], true, count_detections)
        pthr, pmae = calibrate_threshold([p.gaussian_map for p in preds], true, count_map_peaks)
        monkeypatch.setenv("GAUSSIAN_RETINA_CACHE", str(tmp_path / "cache"))
        out = calibrate_counts(predictor, "calib_values", "BGR", progress=False)
    assert out == {"dataset": "calib_values", "images": 3, "count_threshold": thr,
                   "count_mae": round(mae, 3), "peak_threshold": pthr,
                   "peak_mae": round(pmae, 3), "cached": False}
    # Without the weights' path nothing is cached; the cache's place comes from the environment.
    assert calibration_cache_dir() == tmp_path / "cache" and not (tmp_path / "cache").exists()
    monkeypatch.delenv("GAUSSIAN_RETINA_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert calibration_cache_dir() == tmp_path / "home" / ".cache" / "gaussian_retina"


def test_calibration_is_cached_apart_per_checkpoint_dataset_and_settings(tmp_path, model, capsys,
                                                                         caplog):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    twin = tmp_path / "elsewhere" / "w.pth"  # the same bytes and time at another path
    twin.parent.mkdir()
    shutil.copy2(weights, twin)
    os.utime(twin, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns))
    predictor = _predictor(model)
    cache = tmp_path / "deep" / "cache"  # made with its parents
    runs = []
    with tiny_synthetic_split("calib_a", tmp_path / "a", TINY_SCENE_PARAMS, 2):
        for w, p in ((weights, predictor), (weights, predictor), (twin, predictor),
                     ("detectron2://a.pkl", predictor), ("detectron2://b.pkl", predictor),
                     (weights, _predictor(model, rescore_alpha=0.0))):
            runs.append(calibrate_counts(p, "calib_a", "BGR", weights=str(w), cache_dir=cache,
                                         progress=False)["cached"])
        # The model's own test-time options are part of the key: Soft-NMS changes the scores.
        model.soft_nms_sigma = 0.5
        try:
            runs.append(calibrate_counts(predictor, "calib_a", "BGR", weights=str(weights),
                                         cache_dir=cache, progress=False)["cached"])
        finally:
            model.soft_nms_sigma = 0.0
    with tiny_synthetic_split("calib_b", tmp_path / "b", TINY_SCENE_PARAMS, 2, seed=4):
        runs.append(calibrate_counts(predictor, "calib_b", "BGR", weights=str(weights),
                                     cache_dir=cache, progress=False)["cached"])
    assert runs == [False, True, False, False, False, False, False, False]
    assert len(list(cache.iterdir())) == 7
    # The bar names the set and counts its images; a cached result says where it came from.
    logger = logging.getLogger("gaussian_retina.predict")
    logger.addHandler(caplog.handler)
    assert "calibrating" not in capsys.readouterr().err  # progress=False: no bar
    try:
        with tiny_synthetic_split("calib_b", tmp_path / "b", TINY_SCENE_PARAMS, 2, seed=4):
            with caplog.at_level(logging.INFO, logger="gaussian_retina.predict"):
                calibrate_counts(predictor, "calib_b", "BGR", weights=str(weights),
                                 cache_dir=cache)
            calibrate_counts(predictor, "calib_b", "BGR", progress=True)
    finally:
        logger.removeHandler(caplog.handler)
    cached = [r.getMessage() for r in caplog.records]
    assert cached and cached[0].startswith(f"Count calibration on calib_b read from {cache}")
    err = capsys.readouterr().err
    assert "calibrating on calib_b: 100%" in err and "2/2" in err
    assert re.search(r"(image/s|s/image)\]", err)  # its rate, in images


def test_calibration_of_an_empty_dataset(model):
    predictor = _predictor(model)
    DatasetCatalog.register("calib_empty", lambda: [])
    try:
        with pytest.raises(ValueError, match="^the calibration set calib_empty has no images$"):
            calibrate_counts(predictor, "calib_empty", "BGR")
    finally:
        DatasetCatalog.remove("calib_empty")


def _args(*extra):
    config = str(ROOT / "configs/synthetic/gln_R18.yaml")
    return ["--config-file", config, "--weights", "w.pth", "--input", "x", "--output", "o", *extra]


def test_device_from_the_flag_else_from_opts():
    parser = get_parser()
    assert setup_cfg(parser.parse_args(_args("--device", "cuda:1"))).MODEL.DEVICE == "cuda:1"
    opts = ("--opts", "MODEL.DEVICE", "cuda:2")
    assert setup_cfg(parser.parse_args(_args(*opts))).MODEL.DEVICE == "cuda:2"
    assert setup_cfg(parser.parse_args(_args("--device", "cpu", *opts))).MODEL.DEVICE == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(_args("--device", "gpu1"))


def test_missing_input_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(_args("--input", str(tmp_path / "nowhere"), "--device", "cpu"))
    message = str(e.value.code)
    assert "nowhere" in message and "\n" not in message and message.startswith(
        "gaussian-retina-predict: error:"
    )


def test_missing_scale_set_is_a_one_line_error_naming_the_way_round(tmp_path):
    # A fine-tuned model's config names the user's validation photos as DATASETS.TEST[0];
    # predicting elsewhere, without them, is told how to do without.
    photos = _photos(tmp_path / "in", ["a.jpg"])
    gone = repr((("gone_val", str(tmp_path / "imgs"), str(tmp_path / "gone.csv")),))
    with pytest.raises(SystemExit) as e:
        main(_args("--input", str(photos), "--output", str(tmp_path / "out"), "--device", "cpu",
                   "--opts", "DATASETS.REGISTER", gone, "DATASETS.TEST", '("gone_val",)'))
    message = str(e.value.code)
    assert "\n" not in message and "gone.csv" in message and "'gone_val'" in message
    assert "--train-product-side" in message and "--tiling off" in message
