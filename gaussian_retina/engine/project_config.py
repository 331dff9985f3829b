from detectron2.config import get_cfg

from ..baselines import add_baselines_config
from ..config import add_gaussian_retina_config

__all__ = ["get_project_cfg"]


def get_project_cfg(config_file=None, opts=()):
    """
    Detectron2's default config with every key of this project (the core's and the baselines'),
    then ``config_file`` and the ``opts`` overrides, as train_net.py and the tools read it.
    """
    cfg = get_cfg()
    add_gaussian_retina_config(cfg)
    add_baselines_config(cfg)
    if config_file:
        cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg
