import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances, PolygonMasks


@pytest.fixture(scope="module")
def tiny_training_split(request, tmp_path_factory):
    """
    Two scenes of common.TINY_SCENE_PARAMS, registered for the test module as its NAME: the
    training set of common.tiny_training_cfg.
    """
    from common import TINY_SCENE_PARAMS, tiny_synthetic_split

    root = str(tmp_path_factory.mktemp("datasets"))
    with tiny_synthetic_split(request.module.NAME, root, TINY_SCENE_PARAMS, num_images=2) as name:
        yield name


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """
    A datasets root holding synthetic_shelves_train and _val, generated once per session (about
    10 s), for tests that run train_net.py or other processes: pass it as DETECTRON2_DATASETS.
    """
    from gaussian_retina.shelves import register_synthetic_shelves

    root = str(tmp_path_factory.mktemp("datasets"))
    register_synthetic_shelves(root)
    for name in ("synthetic_shelves_train", "synthetic_shelves_val"):
        DatasetCatalog.get(name)
    return root


@pytest.fixture
def two_image_batch():
    """
    Makes a training batch of two random 128x160 images: one with three boxes (two touching, as
    on a shelf) and one with none, so a step covers both the matched and the empty case.
    ``make(mask_on=True)`` adds box-shaped masks, as ShelfDatasetMapper makes them.
    """

    def make(mask_on=False):
        torch.manual_seed(0)
        boxes = torch.tensor(
            [[10.0, 10.0, 40.0, 50.0], [40.0, 10.0, 70.0, 50.0], [70.0, 60.0, 100.0, 110.0]]
        )
        classes = torch.zeros(3, dtype=torch.long)
        full = Instances((128, 160), gt_boxes=Boxes(boxes), gt_classes=classes)
        empty = Instances(
            (128, 160),
            gt_boxes=Boxes(torch.zeros(0, 4)),
            gt_classes=torch.zeros(0, dtype=torch.long),
        )
        if mask_on:
            full.gt_masks = PolygonMasks(
                [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
            )
            empty.gt_masks = PolygonMasks([])
        return [
            {"image": torch.rand(3, 128, 160) * 255, "instances": full},
            {"image": torch.rand(3, 128, 160) * 255, "instances": empty},
        ]

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One PyTorch thread for a module's tests: on a shared, loaded machine the default of one
    thread per core can slow small convolutions twentyfold (threads wait for a busy core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
