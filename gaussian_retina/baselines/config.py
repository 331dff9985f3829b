from detectron2.config import CfgNode as CN


def add_baselines_config(cfg):
    """
    Add the keys of the paper's baselines (Goldman et al.'s Soft-IoU layer and EM-Merger) to a
    Detectron2 config, each with its default.
    """
    _C = cfg

    # ---------------------------------------------------------------------------------------- #
    # Soft-IoU layer of Goldman et al. (CVPR 2019), used by META_ARCHITECTURE "SoftIoURetinaNet"
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.SOFT_IOU = CN()
    # Weight of loss_iou, the binary cross-entropy of the predicted IoU.
    _C.MODEL.SOFT_IOU.LOSS_WEIGHT = 1.0
    # Positive anchors train the IoU branch only if their objectness (sigmoid) exceeds this.
    _C.MODEL.SOFT_IOU.SCORE_FLOOR = 0.1
    # r in confidence = r * objectness + (1 - r) * soft-IoU (the original's hard_score_rate).
    _C.MODEL.SOFT_IOU.OBJECTNESS_WEIGHT = 0.5
    # Duplicate removal at test time: "em" (EM-Merger, see MODEL.EM_MERGER) or "nms".
    _C.MODEL.SOFT_IOU.MERGER = "em"
    # Train only the IoU branch, everything else frozen (the original's second stage).
    _C.MODEL.SOFT_IOU.FREEZE_DETECTOR = False

    # ---------------------------------------------------------------------------------------- #
    # EM-Merger of Goldman et al. (arguments of gaussian_retina.baselines.em_merger.em_merge)
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.EM_MERGER = CN()
    # Fraction of each box side that its heat-map Gaussian covers (0.5: the central half).
    _C.MODEL.EM_MERGER.BOX_SHRINK = 0.5
    # Heat-map pixels above this fraction of the map's peak form the regions (4/255 + rounding).
    _C.MODEL.EM_MERGER.HEAT_THRESHOLD = 4.5 / 255
    # Cap on the number of objects estimated in one region.
    _C.MODEL.EM_MERGER.MAX_OBJECTS_PER_REGION = 100
    # Most EM iterations per region.
    _C.MODEL.EM_MERGER.EM_MAX_ITER = 20
    # EM stops when its objective falls by no more than this.
    _C.MODEL.EM_MERGER.EM_EPSILON = 1e-10
    # Probability mass of the ellipse that decides whether two clusters are nested.
    _C.MODEL.EM_MERGER.ELLIPSE_PROB = 0.5
    # Clusters whose box is not wider and taller than this many pixels are dropped.
    _C.MODEL.EM_MERGER.MIN_BOX_SIZE = 5.0
    # IoU threshold of the final NMS between the regions' boxes.
    _C.MODEL.EM_MERGER.NMS_THRESH = 0.3
    # The heat map's stride keeps the median shrunk box at least this many pixels across.
    _C.MODEL.EM_MERGER.MIN_HEATMAP_BOX_SIDE = 8.0
