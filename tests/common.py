"""Helpers shared by the tests (importable from spawned processes too: tests/ is on sys.path)."""
from pathlib import Path

from detectron2.config import get_cfg

from gaussian_retina import add_gaussian_retina_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def get_config(config_file, *opts):
    """The project's cfg from a config file under configs/ (or an absolute path), then opts."""
    cfg = get_cfg()
    add_gaussian_retina_config(cfg)
    cfg.merge_from_file(str(ROOT / "configs" / config_file))
    cfg.merge_from_list(list(opts))
    return cfg
