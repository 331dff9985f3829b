from detectron2.config import CfgNode as CN


def add_gaussian_retina_config(cfg):
    """
    Add the config nodes of gaussian-retina to a Detectron2 config, each key with its default.
    """
    _C = cfg

    # ---------------------------------------------------------------------------------------- #
    # The Gaussian-map branch of GaussianRetinaNet (Kant, BMVC 2021)
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.GAUSSIAN = CN()
    # Branch architecture: "layer" (Gaussian Layer Network, GLN) or "decoder" (Gaussian Decoder
    # Network, GDN).
    _C.MODEL.GAUSSIAN.ARCH = "layer"
    # lambda3 of the paper's eq. 4: weight of loss_gaussian (chosen with LOSS_NORMALIZE "image",
    # see results/synthetic_recipe.md).
    _C.MODEL.GAUSSIAN.LOSS_WEIGHT = 3.0
    # lambda1 of eq. 4: weight of RetinaNet's loss_cls.
    _C.MODEL.GAUSSIAN.CLS_LOSS_WEIGHT = 1.0
    # lambda2 of eq. 4: weight of RetinaNet's loss_box_reg.
    _C.MODEL.GAUSSIAN.REG_LOSS_WEIGHT = 1.0
    # Pixels whose target is >= this are positives; all of them count in the loss.
    _C.MODEL.GAUSSIAN.POS_THRESH = 0.5
    # Pixels whose target is <= this are negatives, mined hardest first.
    _C.MODEL.GAUSSIAN.NEG_THRESH = 0.1
    # Hard negatives kept per positive pixel.
    _C.MODEL.GAUSSIAN.NEG_RATIO = 3.0
    # Hard negatives kept per image at least, so images without objects still train the map.
    _C.MODEL.GAUSSIAN.MIN_NEGATIVES = 256
    # Reading of eq. 3's mean: "image" (per image, mean over positives + mean over mined
    # negatives, then over images, as CRAFT) or "batch" (one mean over the batch's selected pixels).
    _C.MODEL.GAUSSIAN.LOSS_NORMALIZE = "image"
    # Side of the square Gaussian template warped into every box, in pixels.
    _C.MODEL.GAUSSIAN.TEMPLATE_SIZE = 120
    # Sigma of the template, G = exp(-4 ln2 ((x-xc)^2 + (y-yc)^2) / sigma^2) (sigma = FWHM).
    _C.MODEL.GAUSSIAN.SIGMA = 40.0
    # How warped templates of overlapping boxes combine: "sum" (as the paper) or "max".
    _C.MODEL.GAUSSIAN.ACCUMULATE = "sum"
    # Stride of the predicted and target maps with respect to the input image.
    _C.MODEL.GAUSSIAN.OUT_STRIDE = 2
    # Output channels of the GLN's gaussian layer B2 (over concat(C2, upsampled P3)).
    _C.MODEL.GAUSSIAN.LAYER_CHANNELS = 64
    # Output channels of the GDN's decoder blocks B5, B4, B3, B2.
    _C.MODEL.GAUSSIAN.DECODER_CHANNELS = [128, 64, 64, 64]
    # Channels of the conv-BN-ReLU blocks of the gaussian subnet, run at OUT_STRIDE.
    _C.MODEL.GAUSSIAN.SUBNET_CHANNELS = 32
    # Number of conv-BN-ReLU blocks in the gaussian subnet.
    _C.MODEL.GAUSSIAN.NUM_SUBNET_CONVS = 2
    # Normalization of the branch's convs (see layers.get_norm). "SyncBN" synchronises BN over
    # processes; on a CPU model it becomes "naiveSyncBN", which gloo runs. One process: plain BN.
    _C.MODEL.GAUSSIAN.NORM = "SyncBN"
    # At test time also run the branch and return its map as "gaussian_map" next to
    # "instances" (for figures). Off by default: inference then costs what RetinaNet costs.
    _C.MODEL.GAUSSIAN.RETURN_MAP_AT_TEST = False

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
    # EM-Merger of Goldman et al. (arguments of gaussian_retina.modeling.em_merger.em_merge)
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

    # ---------------------------------------------------------------------------------------- #
    # Shelf datasets
    # ---------------------------------------------------------------------------------------- #
    # A malformed annotation row or a broken image: "error" raises, naming file, line and
    # problem; "skip" drops it, counted by reason in one summary line per dataset.
    _C.DATASETS.BAD_INPUT_POLICY = "error"
    # Where COCO jsons converted for COCOEvaluator are cached; "" = a coco_cache/ folder next
    # to the annotations (~/.cache/gaussian_retina/coco_json where that is read-only).
    _C.DATASETS.COCO_JSON_CACHE_DIR = ""
