"""Helpers shared by the tests (importable from spawned processes too: tests/ is on sys.path)."""
import contextlib
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.shelves import configure_shelf_datasets
from gaussian_retina.shelves.synthetic_shelves import generate_synthetic_shelves

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


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
