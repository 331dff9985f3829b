"""
gaussian-retina: RetinaNet with learned Gaussian maps for dense object detection, as a Detectron2
project add-on. Importing the package registers its models, backbones and datasets.
ARCHITECTURE.md gives the layout: the core, the shelves wing and the baselines wing.
"""
def _require(module, how):
    try:
        __import__(module)
    except ImportError:
        raise ImportError(f"gaussian_retina needs {module}: {how}") from None


_require("torch", "install PyTorch from https://pytorch.org first")
_require("torchvision", "install the torchvision that matches your PyTorch from https://pytorch.org")
_require(
    "detectron2",
    "install Detectron2 from its official instructions, "
    "https://detectron2.readthedocs.io/en/latest/tutorials/install.html",
)

# The core: the paper's method on Detectron2.
from .config import add_gaussian_retina_config
from .data import (
    GaussianDatasetMapper,
    GaussianMapRenderer,
    ShelfDatasetMapper,
    render_gaussian_map,
)
from .evaluation import DenseCOCOEvaluator
from .modeling import GaussianRetinaNet, gaussian_map_loss

# The wings, imported here so that their datasets and models register with Detectron2.
from . import shelves  # noqa: F401  registers the datasets
from .baselines import SoftIoURetinaNet, add_baselines_config, em_merge

__version__ = "0.1.0"
