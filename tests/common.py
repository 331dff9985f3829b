"""Helpers shared by the tests (importable from spawned processes too: tests/ is on sys.path)."""

import contextlib
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from PIL import Image

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.shelves import configure_shelf_datasets
from gaussian_retina.shelves.synthetic_scene import ShelfSceneParams
from gaussian_retina.shelves.synthetic_shelves import generate_synthetic_shelves

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_image(path, w, h, orientation=None):
    """A plain w x h JPEG or PNG (by the suffix) at ``path``, with an EXIF orientation tag if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (w, h), (100, 90, 80))
    if orientation is None:
        im.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)


def get_config(config_file, *opts):
    """The project's cfg from a config file under configs/ (or an absolute path), then opts."""
    return get_project_cfg(config_file and ROOT / "configs" / config_file, opts)


def set_bad_input_policy(name, policy):
    """Give one registered retail dataset another bad-input policy, as a tool's cfg would."""
    configure_shelf_datasets(get_config(None, "DATASETS.BAD_INPUT_POLICY", policy), [name])


@contextlib.contextmanager
def tiny_synthetic_split(name, root, params, num_images, seed=3):
    """A few synthetic scenes of ``params``, registered as ``name`` inside the block."""
    json_file = generate_synthetic_shelves(
        root, name, num_images=num_images, seed=seed, params=params
    )
    image_root = str(Path(json_file).parent / "images")
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    try:
        yield name
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# Scenes of 128x96 with 4-12 products: a training step on them takes well under a second.
TINY_SCENE_PARAMS = ShelfSceneParams(
    long_side=128,
    short_side=96,
    portrait_prob=0.0,
    min_objects=4,
    max_objects=12,
    min_shelf_pitch=32,
    max_shelf_pitch=48,
)


def tiny_training_cfg(config_file, train_split, output_dir, overrides=None):
    """
    The cfg of ``config_file`` for training steps of 2 images at 128x96 on ``train_split``, no
    evaluation, then the ``overrides`` dict (full key: value).
    """
    cfg = get_config(config_file)
    base = {
        "DATASETS.TRAIN": (train_split,),
        "DATASETS.TEST": (),
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.STEPS": (),
        "DATALOADER.NUM_WORKERS": 0,
        "INPUT.MIN_SIZE_TRAIN": (96,),
        "INPUT.MAX_SIZE_TRAIN": 128,
        "OUTPUT_DIR": str(output_dir),
    }
    base.update(overrides or {})
    cfg.merge_from_list([item for pair in base.items() for item in pair])
    return cfg


def inference_arguments(model):
    """
    The arguments RetinaNet's forward hands ``model.inference_single_image`` for one random
    160x200 image. The head's class biases are spread first, so that an untrained model scores
    its boxes over (0, 1) rather than all at the prior.
    """
    torch.nn.init.normal_(model.head.cls_score.bias)
    calls = []
    inference = model.inference_single_image
    model.inference_single_image = lambda *args: calls.append(args) or inference(*args)
    g = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            model([{"image": torch.randint(0, 256, (3, 160, 200), generator=g).float()}])
    finally:
        del model.inference_single_image
    return calls[0]
