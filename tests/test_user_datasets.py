"""
A user's labelled photos from the command line (DATASETS.REGISTER), in every format, with the
bad-input policy coming from one place; and a fine-tune of a saved checkpoint on them.
"""

import json
import logging
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from PIL import Image

from common import ROOT, SHARED_DATA, get_config
from gaussian_retina.data import ShelfDatasetMapper
from gaussian_retina.engine import Trainer
from gaussian_retina.shelves import (
    AnnotationError,
    configure_shelf_datasets,
    register_retail_dataset,
    retail_dataset_spec,
)

SIZES = {"a.jpg": (40, 60), "b.jpg": (50, 30)}  # name -> (h, w)
BOXES = {"a.jpg": [[1, 2, 10, 20], [30, 5, 50, 35]], "b.jpg": [[2, 3, 20, 40]]}


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        # Noise, so that a JPEG cut in half loses pixel data rather than its header.
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, quality=95)
    return root


def _annotations(tmp_path, fmt):
    """The same boxes written in ``fmt``; returns the annotations' path."""
    if fmt == "sku110k":
        path = tmp_path / "ann.csv"
        path.write_text(
            "".join(
                f"{n},{x1},{y1},{x2},{y2},object,{SIZES[n][1]},{SIZES[n][0]}\n"
                for n, boxes in BOXES.items()
                for x1, y1, x2, y2 in boxes
            )
        )
    elif fmt == "benchmark":
        path = tmp_path / "bench.csv"
        path.write_text(
            "image_name,x1,y1,x2,y2,class\n"
            + "".join(f"{n},{x1},{y1},{x2},{y2},3\n" for n, b in BOXES.items() for x1, y1, x2, y2 in b)
        )
    elif fmt == "coco":
        path = tmp_path / "instances.json"
        images = [
            {"id": i + 1, "file_name": n, "height": SIZES[n][0], "width": SIZES[n][1]}
            for i, n in enumerate(BOXES)
        ]
        anns = [
            {"id": len(images) + k, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            for i, n in enumerate(BOXES)
            for k, (x1, y1, x2, y2) in enumerate(BOXES[n])
        ]
        path.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "object"}]}))
    else:
        path = tmp_path / "labels"
        path.mkdir()
        for n, boxes in BOXES.items():
            h, w = SIZES[n]
            (path / n.replace(".jpg", ".txt")).write_text(
                "".join(
                    f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
                    for x1, y1, x2, y2 in boxes
                )
            )
    return path


def _cfg(tmp_path, *entries, opts=()):
    return get_config(
        None,
        "DATASETS.REGISTER", tuple(entries),
        "DATASETS.COCO_JSON_CACHE_DIR", str(tmp_path / "cache"),
        *opts,
    )


@pytest.mark.parametrize("fmt", ["sku110k", "benchmark", "coco", "yolo"])
def test_each_format_registers_from_the_config(tmp_path, photos, fmt):
    name = f"user_{fmt}_{uuid.uuid4().hex[:6]}"
    # As on the command line: train_net.py ... DATASETS.REGISTER '(("name", "images", "ann"),)'
    cfg = get_config(None)
    cfg.merge_from_list(["DATASETS.REGISTER", repr(((name, str(photos), str(_annotations(tmp_path, fmt))),)),
                         "DATASETS.TRAIN", repr((name,))])
    configure_shelf_datasets(cfg)
    dicts = DatasetCatalog.get(name)
    boxes = {d["file_name"].rsplit("/", 1)[1]: [a["bbox"] for a in d["annotations"]] for d in dicts}
    assert boxes.keys() == BOXES.keys()
    for n in BOXES:
        np.testing.assert_allclose(boxes[n], BOXES[n], atol=1e-4)
    assert retail_dataset_spec(name).resolved()[0] == fmt  # detected, not told
    assert retail_dataset_spec(name).bad_input_policy == "error"


def test_a_forced_format_and_malformed_entries(tmp_path, photos):
    name = f"user_forced_{uuid.uuid4().hex[:6]}"
    ann = _annotations(tmp_path, "benchmark")
    configure_shelf_datasets(_cfg(tmp_path, (name, str(photos), str(ann), "sku110k")), [])
    # Told it is SKU-110K's layout, the 6-column file fails on its first row, named.
    with pytest.raises(AnnotationError, match=rf"{ann}, line 1: wrong column count"):
        DatasetCatalog.get(name)
    for bad in [("only", "two"), (name, str(photos), "")]:
        with pytest.raises(ValueError, match="DATASETS.REGISTER takes"):
            configure_shelf_datasets(_cfg(tmp_path, bad), [])
    with pytest.raises(ValueError, match="already registered as another kind"):
        configure_shelf_datasets(_cfg(tmp_path, ("coco_2017_val", str(photos), str(ann))), [])


def test_a_bad_row_is_named_with_its_file_and_line(tmp_path, photos):
    name = f"user_bad_{uuid.uuid4().hex[:6]}"
    ann = _annotations(tmp_path, "sku110k")
    ann.write_text(ann.read_text() + "a.jpg,1,2,ten,20,object,60,40\n")
    configure_shelf_datasets(_cfg(tmp_path, (name, str(photos), str(ann))), [])
    with pytest.raises(AnnotationError, match=rf"{ann}, line 4: non-numeric field \(x2 = 'ten'\)"):
        DatasetCatalog.get(name)
    # The run's choice of skipping comes from the same config.
    configure_shelf_datasets(
        _cfg(tmp_path, (name, str(photos), str(ann)), opts=["DATASETS.BAD_INPUT_POLICY", "skip"]),
        [name],
    )
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get(name)) == 3


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_policy_given_at_registration_holds_and_a_cut_photo_counts_once(tmp_path, photos, caplog):
    _truncate(photos / "b.jpg")
    ann = _annotations(tmp_path, "sku110k")
    name = f"user_skip_{uuid.uuid4().hex[:6]}"
    register_retail_dataset(name, str(photos), str(ann), bad_input_policy="skip",
                            coco_cache_dir=str(tmp_path / "cache"))
    cfg = get_config("synthetic/gln_R18.yaml", "DATASETS.TRAIN", (name,), "DATASETS.TEST", ())
    assert cfg.DATASETS.BAD_INPUT_POLICY == ""  # nothing given for the run
    # Detectron2's setup_logger (run by other tests) stops "gaussian_retina" propagating.
    # When no setup_logger has run (this file alone), caplog would also get each record through
    # the root logger: propagation is off inside.
    logger = logging.getLogger("gaussian_retina")
    logger.addHandler(caplog.handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        with caplog.at_level(logging.WARNING, logger="gaussian_retina"):
            configure_shelf_datasets(cfg)
            dicts = DatasetCatalog.get(name)
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert retail_dataset_spec(name).bad_input_policy == "skip"
    # Found when the dataset loads, from the file's missing end marker: the truncated photo is
    # dropped there and counted in the one summary line, not at every epoch of the loader.
    assert [d["file_name"].rsplit("/", 1)[1] for d in dicts] == ["a.jpg"]
    summaries = [r.getMessage() for r in caplog.records if "kept 1 images" in r.getMessage()]
    assert len(summaries) == 1 and "unreadable image: 1 rows of 1 images" in summaries[0]
    assert all(d["bad_input_policy"] == "skip" for d in dicts)

    # Under the default policy the same photo stops loading with its name and lines.
    register_retail_dataset(name, str(photos), str(ann), coco_cache_dir=str(tmp_path / "cache"))
    with pytest.raises(AnnotationError, match=r"b\.jpg: truncated JPEG"):
        DatasetCatalog.get(name)


def test_the_loader_skips_a_corrupt_photo_once_when_its_dataset_says_skip(tmp_path, photos):
    record = {"file_name": str(photos / "a.jpg"), "height": 40, "width": 60, "image_id": 1,
              "apply_exif": False, "annotations": []}
    bad = dict(record, file_name=str(tmp_path / "junk.jpg"))
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg but ends \xff\xd9")
    mapper = ShelfDatasetMapper(True, augmentations=[], image_format="BGR")
    with pytest.raises(Exception, match="junk.jpg"):
        mapper(bad)
    skipping = dict(bad, bad_input_policy="skip")
    assert mapper(skipping) is None and mapper(skipping) is None  # two epochs
    assert mapper.num_bad_images == 1
    assert mapper(record) is not None


def _tiny_checkpoint(tmp_path):
    """An untrained model of the fine-tuning config, saved as a user's checkpoint would be."""
    cfg = get_config("finetune/gln_R18_photos.yaml", "MODEL.WEIGHTS", "")
    model = Trainer.build_model(cfg)
    path = tmp_path / "pretrained"
    path.mkdir()
    DetectionCheckpointer(model, save_dir=str(path)).save("model_final")
    return path / "model_final.pth", model


def test_fine_tuning_starts_from_the_checkpoint(tmp_path, photos):
    torch.set_num_threads(2)
    weights, pretrained = _tiny_checkpoint(tmp_path)
    name = f"user_ft_{uuid.uuid4().hex[:6]}"
    cfg = get_config(
        "finetune/gln_R18_photos.yaml",
        "DATASETS.REGISTER", ((name, str(photos), str(_annotations(tmp_path, "sku110k"))),),
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,),
        "MODEL.WEIGHTS", str(weights), "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.STEPS", (), "DATALOADER.NUM_WORKERS", 0, "TEST.EVAL_PERIOD", 0,
        "OUTPUT_DIR", str(tmp_path / "out"),
    )
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.checkpointer.model  # the model itself, not its bfloat16 wrapper
    loaded = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in pretrained.state_dict().items():  # starts from the checkpoint, not from scratch
        assert torch.equal(loaded[k], v), k
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    after = model.state_dict()
    assert any(not torch.equal(after[k], loaded[k]) for k in loaded if after[k].is_floating_point())
    assert (tmp_path / "out" / "model_final.pth").is_file()


@pytest.mark.skipif(not (SHARED_DATA / "tobacco_shelves").is_dir(), reason="../shared/data absent")
def test_train_net_eval_only_on_registered_photos_with_stale_exif(tmp_path):
    """The README's evaluation command on the two photos whose EXIF tag is stale: no Python."""
    weights, _ = _tiny_checkpoint(tmp_path)
    stale = SHARED_DATA / "tobacco_shelves" / "exif_stale"
    out = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", "configs/finetune/gln_R18_photos.yaml",
         "--eval-only",
         "DATASETS.REGISTER",
         repr((("stale", str(stale / "images"), str(stale / "annotations_raw_pixels.csv")),)),
         "DATASETS.TEST", '("stale",)', "MODEL.WEIGHTS", str(weights),
         "DATASETS.COCO_JSON_CACHE_DIR", str(tmp_path / "cache"),
         "OUTPUT_DIR", str(tmp_path / "eval")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Dataset 'stale'" in log and "kept 2 images" in log
    assert "copypaste: AP,AP50,AP75" in log or "AR300" in log
