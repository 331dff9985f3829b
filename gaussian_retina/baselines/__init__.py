"""
The paper's strongest baseline, Goldman et al. (CVPR 2019): the Soft-IoU layer on RetinaNet and
the EM-Merger. A wing beside the core: it imports the core's anchor matching, never the reverse.
Importing registers ``SoftIoURetinaNet`` in Detectron2's META_ARCH_REGISTRY.
"""
from .config import add_baselines_config
from .em_merger import em_merge
from .soft_iou import SoftIoURetinaNet, SoftIoURetinaNetHead, soft_iou_targets

__all__ = [
    "SoftIoURetinaNet",
    "SoftIoURetinaNetHead",
    "add_baselines_config",
    "em_merge",
    "soft_iou_targets",
]
