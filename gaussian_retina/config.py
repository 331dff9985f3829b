from detectron2.config import CfgNode as CN


def add_gaussian_retina_config(cfg):
    """
    Add the keys of gaussian-retina's core to a Detectron2 config, each with its default: the
    Gaussian branch, lambda1 and lambda2 of RetinaNet's own losses, and the shelf datasets'
    input options. The baselines' keys are added by
    :func:`gaussian_retina.baselines.add_baselines_config`.
    """
    _C = cfg

    # ---------------------------------------------------------------------------------------- #
    # The Gaussian-map branch of GaussianRetinaNet (Kant, BMVC 2021)
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.GAUSSIAN = CN()
    # Branch architecture: "layer" (Gaussian Layer Network, GLN) or "decoder" (Gaussian Decoder
    # Network, GDN).
    _C.MODEL.GAUSSIAN.ARCH = "layer"
    # lambda3 of the paper's eq. 4: weight of loss_gaussian (chosen with LOSS_NORMALIZE "image" by
    # three seeds on the synthetic recipe, see results/synthetic_recipe.md).
    _C.MODEL.GAUSSIAN.LOSS_WEIGHT = 10.0
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
    # The paper's eq. 4 weights of RetinaNet's own losses (used by GaussianRetinaNet)
    # ---------------------------------------------------------------------------------------- #
    # lambda1: weight of loss_cls.
    _C.MODEL.RETINANET.CLS_LOSS_WEIGHT = 1.0
    # lambda2: weight of loss_box_reg.
    _C.MODEL.RETINANET.REG_LOSS_WEIGHT = 1.0
    # At test time, each box NMS keeps becomes the score-weighted mean of the candidates of its
    # class that overlap it by at least this IoU (box voting, modeling/box_voting.py): many
    # anchors see each product, and their mean box is tighter. 0 keeps NMS's boxes, as RetinaNet.
    _C.MODEL.RETINANET.VOTE_IOU_THRESH_TEST = 0.0
    # Train the classifier towards each positive anchor's IoU with its object (quality focal
    # loss, modeling/quality_focal_loss.py) so that scores rank boxes by how well they fit.
    _C.MODEL.RETINANET.IOU_AWARE_CLS = False
    # Above 0: Gaussian Soft-NMS of this width at test time (modeling/soft_nms.py) in place of
    # NMS at NMS_THRESH_TEST: near-copies of a box stay, far below it, as second hypotheses.
    _C.MODEL.RETINANET.SOFT_NMS_SIGMA_TEST = 0.0

    # ---------------------------------------------------------------------------------------- #
    # Shelf datasets
    # ---------------------------------------------------------------------------------------- #
    # Shelf datasets registered from the config, so that a user's labelled photos need no
    # Python: a tuple of (name, image folder, annotations) or (name, image folder, annotations,
    # format) tuples, any format register_retail_dataset reads ("auto" detects it). The names
    # can then be used in TRAIN, TEST and as the predict command's calibration set.
    _C.DATASETS.REGISTER = ()
    # A malformed annotation row or a broken image: "error" raises, naming file, line and
    # problem; "skip" drops it, counted by reason in one summary line per dataset. "" keeps
    # each dataset's own policy (register_retail_dataset's bad_input_policy, "error" unless
    # given), so that a choice made at registration holds; a value given here is the run's
    # choice and applies to every shelf dataset the config names.
    _C.DATASETS.BAD_INPUT_POLICY = ""
    # Where COCO jsons converted for COCOEvaluator are cached; "" = a coco_cache/ folder next
    # to the annotations (~/.cache/gaussian_retina/coco_json where that is read-only).
    _C.DATASETS.COCO_JSON_CACHE_DIR = ""

    # ---------------------------------------------------------------------------------------- #
    # Training augmentation beyond Detectron2's resize and flip
    # ---------------------------------------------------------------------------------------- #
    # Photometric jitter in training: brightness, contrast and saturation each scaled by a
    # random factor in [1 - x, 1 + x]; 0 disables it. Detectron2's RandomSaturation weighs the
    # channels as RGB; on BGR input its grey differs slightly, which a jitter does not mind.
    # Off by default (the paper's recipe); the synthetic configs turn it on with SCALE_JITTER.
    _C.INPUT.COLOR_JITTER = 0.0
    # Scale jitter in training, (min, max): each image at its MIN_SIZE_TRAIN / MAX_SIZE_TRAIN
    # size times a random factor in [min, max], cropped or padded back to that size
    # (data/scale_jitter.py); () disables it. Off by default, as in the paper; the synthetic
    # configs turn it on with COLOR_JITTER (results/synthetic_recipe.md).
    _C.INPUT.SCALE_JITTER = ()
    # Probability that a training image is tiled with three others into one of its size, each
    # at its own scale (data/mosaic.py); 0 disables it. Off by default.
    _C.INPUT.MOSAIC_PROB = 0.0
    # Training images kept decoded in each data loader worker, up to this many MiB: a few
    # labelled photos are drawn hundreds of times, and decoding a photo costs more than the rest
    # of mapping it. 0 decodes every time.
    _C.DATALOADER.DECODED_CACHE_MB = 0

    # An exponential moving average of the weights, which training ends with
    # (engine/model_ema.py); the names are d2go's.
    _C.MODEL_EMA = CN()
    _C.MODEL_EMA.ENABLED = False
    # The average's weight at each step: 0.995 averages over about the last 200 iterations.
    _C.MODEL_EMA.DECAY = 0.995

    # ---------------------------------------------------------------------------------------- #
    # Training speed on the CPU (engine/cpu_speed.py)
    # ---------------------------------------------------------------------------------------- #
    _C.SOLVER.CPU_AMP = CN()
    # "on": the training forward pass in bfloat16 under CPU autocast and the convolutions in
    # the channels-last layout (Detectron2's SOLVER.AMP is CUDA-only); "off": float32;
    # "auto": "on" where the CPU has bfloat16 instructions (AVX512-BF16 or AMX), since elsewhere
    # bfloat16 is emulated and slower than float32 (results/speed_and_memory.md).
    _C.SOLVER.CPU_AMP.MODE = "off"
