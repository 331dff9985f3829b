from .anchor_matching import ChunkedMatchingRetinaNet, match_anchors
from .box_voting import vote_boxes
from .backbone import BottomUpFPN, build_gaussian_retinanet_resnet_fpn_backbone
from .gaussian_branch import (
    GaussianDecoderNetwork,
    GaussianLayerNetwork,
    GaussianSubnet,
    build_gaussian_branch,
)
from .gaussian_loss import gaussian_map_loss
from .meta_arch import GaussianRetinaNet
from .quality_focal_loss import iou_quality_targets, quality_focal_loss
from .soft_nms import soft_nms
