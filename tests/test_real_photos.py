"""
The model and the targets on real shelf photographs from ../shared/data (see its README.md).
"""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from common import SHARED_DATA as DATA
from common import get_config
from gaussian_retina import GaussianDatasetMapper
from gaussian_retina.shelves import register_retail_dataset
from gaussian_retina.data.image_reader import read_shelf_image

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real shelf data not found at {DATA} (../shared/data)"
)
NAME = "tobacco_shelves_real_photos_test"


@pytest.fixture(scope="module")
def tobacco():
    if NAME not in DatasetCatalog:
        register_retail_dataset(
            NAME, str(DATA / "tobacco_shelves/images"), str(DATA / "tobacco_shelves/annotations.csv")
        )
    yield DatasetCatalog.get(NAME)
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg():
    return get_config("synthetic/gln_R18.yaml")


def test_targets_on_a_real_photo_peak_inside_every_box(tobacco):
    record = max(tobacco, key=lambda r: len(r["annotations"]))
    # The photo alone, resized: no mosaic, no jitter.
    mapper = GaussianDatasetMapper(_cfg(), is_train=True, mosaic_prob=0.0)
    mapper.augmentations = T.AugmentationList([T.ResizeShortestEdge(800, 1333)])
    out = mapper(record)
    gmap = out["gaussian_map"].numpy()
    boxes = out["instances"].gt_boxes.tensor.numpy()
    h, w = out["image"].shape[-2:]
    assert gmap.shape == ((h + 1) // 2, (w + 1) // 2)
    assert len(boxes) == len(record["annotations"]) >= 10
    # Each box's centre carries (close to) the peak; the map is flat far from every box.
    cx = ((boxes[:, 0] + boxes[:, 2]) / 4).astype(int)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 4).astype(int)
    assert np.all(gmap[cy, cx] > 0.9)
    covered = np.zeros_like(gmap, dtype=bool)
    for x0, y0, x1, y1 in (boxes / 2).astype(int):
        covered[y0 : y1 + 1, x0 : x1 + 1] = True
    assert np.all(gmap[~covered] == 0)


def test_inference_on_a_full_resolution_sku110k_photo():
    photo = sorted((DATA / "sku110k_photos").glob("*.jpg"))[0]
    image = read_shelf_image({"file_name": str(photo)}, "BGR")
    assert min(image.shape[:2]) >= 1920  # real resolution, resized by the model's input size
    cfg = _cfg()
    cfg.MODEL.GAUSSIAN.RETURN_MAP_AT_TEST = True
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # an untrained head scores below the default
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.nn.init.normal_(model.head.cls_score.bias)  # spread the scores over the anchors
    resized = T.ResizeShortestEdge(384, 512).get_transform(image).apply_image(image)
    inputs = [{"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()),
               "height": image.shape[0], "width": image.shape[1]}]
    with torch.no_grad():
        out = model(inputs)[0]
    instances = out["instances"]
    assert instances.image_size == image.shape[:2]
    assert len(instances) == cfg.TEST.DETECTIONS_PER_IMAGE
    # The boxes come back in the photo's pixels: inside the photo, and reaching well past the
    # resized input's own size (anchors cover the whole input, so some box ends near its edge).
    boxes = instances.pred_boxes.tensor
    assert boxes.min() >= 0
    assert torch.all(boxes[:, 0::2] <= image.shape[1]) and torch.all(boxes[:, 1::2] <= image.shape[0])
    assert boxes[:, 2].max() > 0.9 * image.shape[1] > 2 * resized.shape[1]
    assert boxes[:, 3].max() > 0.9 * image.shape[0] > 2 * resized.shape[0]
    assert out["gaussian_map"].shape[-2:] == ((resized.shape[0] + 1) // 2, (resized.shape[1] + 1) // 2)
    assert torch.isfinite(out["gaussian_map"]).all()
