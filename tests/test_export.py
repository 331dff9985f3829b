"""
Export (gaussian_retina.inference.export): the ONNX file run by onnxruntime and the traced
TorchScript file give the PyTorch model's detections on a real shelf photo, at the traced size and
at another one.
"""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from common import SHARED_DATA, get_config
from gaussian_retina.data.image_reader import read_shelf_image
from gaussian_retina.inference import (
    compare_detections,
    export_onnx,
    export_torchscript,
    load_onnx,
    resize_for_test,
    run_onnx,
    run_pytorch,
    run_torchscript,
)

PHOTOS = SHARED_DATA / "tobacco_shelves" / "images"
pytestmark = pytest.mark.skipif(
    not PHOTOS.is_dir(), reason=f"real shelf photos not found at {PHOTOS} (../shared/data)"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded untrained GLN R18, one tobacco photo at the config's test size, both exports."""
    cfg = get_config("synthetic/gln_R18.yaml", "MODEL.RETINANET.SCORE_THRESH_TEST", 0.5)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # At the default init (std 0.01, prior 0.01) every anchor scores 0.01-0.02 and nothing passes
    # a threshold: spreading the class logits (std about 2) gives scores over (0, 1), as a
    # trained model's are, and some 80 detections for the parity to be about.
    with torch.no_grad():
        torch.nn.init.normal_(model.head.cls_score.weight, std=0.1)
    files = sorted(PHOTOS.glob("*.JPG"))
    photo, other_photo = (
        read_shelf_image({"file_name": str(f)}, cfg.INPUT.FORMAT) for f in (files[0], files[5])
    )
    image = resize_for_test(photo, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    assert image.shape[1:] == (192, 256)  # the photo is 3264 x 2448
    d = tmp_path_factory.mktemp("export")
    return dict(
        model=model,
        image=image,
        # Another photo at another size and aspect: H and W are dynamic in both exports.
        other_image=resize_for_test(other_photo, 160, 300),
        reference=run_pytorch(model, image),
        onnx=load_onnx(export_onnx(model, image, str(d / "model.onnx"))),
        torchscript=torch.jit.load(export_torchscript(model, image, str(d / "model.ts"))),
    )


def _assert_same_detections(reference, other):
    parity = compare_detections(reference, other)
    assert parity["count"] > 10, parity  # otherwise the parity says little
    assert parity["other_count"] == parity["count"], parity
    assert parity["one_to_one"] and parity["min_iou"] > 0.99, parity
    assert parity["max_score_diff"] < 1e-3, parity
    assert parity["class_mismatches"] == 0, parity


def test_onnx_runs_in_onnxruntime_with_the_pytorch_detections(exported):
    _assert_same_detections(exported["reference"], run_onnx(exported["onnx"], exported["image"]))


def test_torchscript_gives_the_pytorch_detections(exported):
    _assert_same_detections(
        exported["reference"], run_torchscript(exported["torchscript"], exported["image"])
    )


def test_exports_take_another_image_size(exported):
    image = exported["other_image"]
    assert image.shape[1:] != exported["image"].shape[1:]
    reference = run_pytorch(exported["model"], image)
    _assert_same_detections(reference, run_onnx(exported["onnx"], image))
    _assert_same_detections(reference, run_torchscript(exported["torchscript"], image))


def test_soft_iou_retinanet_is_refused():
    model = build_model(get_config("synthetic/goldman_R18.yaml")).eval()
    with pytest.raises(TypeError, match="EM-Merger"):
        export_onnx(model, torch.zeros(3, 64, 64), "unused.onnx")


def test_soft_nms_is_refused_with_the_key_to_change():
    cfg = get_config("synthetic/gln_R18.yaml", "MODEL.RETINANET.SOFT_NMS_SIGMA_TEST", "0.5")
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match=r"^Soft-NMS \(MODEL.RETINANET.SOFT_NMS_SIGMA_TEST 0.5\) "
                       "cannot be exported: set it to 0"):
        export_onnx(model, torch.zeros(3, 64, 64), "unused.onnx")


@pytest.fixture(
    scope="module",
    # (config, the class weights' std, the box weights' scale, score threshold, options): an
    # untrained R50's features are far larger than an R18's with GroupNorm, and need far smaller
    # weights for its scores to spread over (0, 1) and its boxes to stay near their anchors.
    params=[
        ("synthetic/gln_R18.yaml", 0.1, 1.0, 0.3),
        # The paper's R50 at a small input, to keep the export quick.
        ("gln_R50.yaml", 0.002, 0.01, 0.05, "INPUT.MIN_SIZE_TEST", 192, "INPUT.MAX_SIZE_TEST", 256),
    ],
    ids=["gln_R18", "gln_R50"],
)
def rescored(request, tmp_path_factory):
    """A seeded untrained GLN with its branch's map rescoring, exported at a tobacco photo."""
    config, cls_std, box_scale, thresh, *opts = request.param
    cfg = get_config(config, "MODEL.RETINANET.SCORE_THRESH_TEST", thresh, "MODEL.DEVICE", "cpu", *opts)
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    photo = read_shelf_image({"file_name": str(sorted(PHOTOS.glob("*.JPG"))[0])}, cfg.INPUT.FORMAT)
    image = resize_for_test(photo, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    with torch.no_grad():
        torch.nn.init.normal_(model.head.cls_score.weight, std=cls_std)
        model.head.bbox_pred.weight *= box_scale
        # A map of mean 0.5 and std 0.25 over the photo, so that the rescoring changes the scores.
        predictor = model.gaussian_branch.subnet.predictor
        gaussian_map = model.gaussian_branch(model.backbone(model.preprocess_image([{"image": image}]).tensor))
        predictor.weight *= 0.25 / gaussian_map.std()
        predictor.bias += 0.5 - gaussian_map.mean() * 0.25 / gaussian_map.std()
    d = tmp_path_factory.mktemp("export_rescored")
    return dict(
        cfg=cfg,
        model=model,
        photo=photo,
        image=image,
        onnx=load_onnx(export_onnx(model, image, str(d / "model.onnx"))),
        torchscript=torch.jit.load(export_torchscript(model, image, str(d / "model.ts"))),
    )


def test_exports_give_the_predict_commands_rescored_detections(rescored):
    from gaussian_retina.inference import ShelfPredictor

    model, photo, image = rescored["model"], rescored["photo"], rescored["image"]
    predictor = ShelfPredictor(
        model=model,
        test_size=(rescored["cfg"].INPUT.MIN_SIZE_TEST, rescored["cfg"].INPUT.MAX_SIZE_TEST),
        tiling="off",
        max_detections=rescored["cfg"].TEST.DETECTIONS_PER_IMAGE,
    )
    assert predictor.rescore_alpha > 0  # the command's default for a model with the branch
    pred = predictor([photo])[0]
    # The photo is 3264 x 2448 and the input 256 x 192: boxes scale by 12.75 on both axes.
    scale = photo.shape[1] / image.shape[2]
    assert scale == photo.shape[0] / image.shape[1]
    reference = (pred.boxes / scale, pred.scores, pred.classes)
    plain_scores = run_pytorch(model, image, rescore_alpha=0.0)[1]
    assert len(pred.scores) > 10
    assert not np.allclose(plain_scores[:10], pred.scores[:10], atol=1e-3)
    for exported in (run_onnx(rescored["onnx"], image), run_torchscript(rescored["torchscript"], image)):
        _assert_same_detections(reference, exported)
        np.testing.assert_array_less(np.diff(exported[1]), 1e-6)  # best first
