"""Helpers shared by the tests (importable from spawned processes too: tests/ is on sys.path)."""
from pathlib import Path

from gaussian_retina.engine import get_project_cfg
from gaussian_retina.shelves import configure_shelf_datasets

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def get_config(config_file, *opts):
    """The project's cfg from a config file under configs/ (or an absolute path), then opts."""
    return get_project_cfg(config_file and ROOT / "configs" / config_file, opts)


def set_bad_input_policy(name, policy):
    """Give one registered retail dataset another bad-input policy, as a tool's cfg would."""
    configure_shelf_datasets(get_config(None, "DATASETS.BAD_INPUT_POLICY", policy), [name])
