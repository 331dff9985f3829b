import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances, PolygonMasks

from .gaussian_target import GaussianMapRenderer
from .image_reader import BadImageError, read_shelf_image
from .mosaic import mosaic
from .scale_jitter import ScaleJitterCrop

__all__ = ["ShelfDatasetMapper", "GaussianDatasetMapper", "build_gaussian_renderer"]

logger = logging.getLogger(__name__)


class ShelfDatasetMapper(DatasetMapper):
    """
    Detectron2's DatasetMapper for shelf datasets. It differs in these ways:

    * images are read with :func:`read_shelf_image`, which honours the record's EXIF choice (the
      retail releases annotate raw pixels) and turns unreadable files into a
      :class:`BadImageError` that names the file. With ``skip_bad_images`` such an image is
      skipped with a warning: in training another image is drawn instead (Detectron2's
      MapDataset does that on None); in evaluation it is fed as a blank image of its recorded
      size, so the image ids stay aligned and its ground truth counts as missed, not as absent;
    * boxes-only annotations get their box as a polygon when masks are trained (Mask R-CNN on
      datasets that carry no masks);
    * in training, with ``mosaic_prob``, an image is tiled with three others drawn from the
      training records (:func:`mosaic`);
    * without keypoints or masks of the dataset's own, an image's boxes go through the transforms
      as one array, with the same result as Detectron2's box-by-box path at a fraction of its cost
      on dense shelves; the box-shaped masks are then drawn from the transformed boxes.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        skip_bad_images: bool = False,
        mosaic_prob: float = 0.0,
        mosaic_pool=None,
        decoded_cache_mb: float = 0,
        **kwargs,
    ):
        """
        Args:
            skip_bad_images: skip unreadable images with a warning instead of raising, for
                every record; without it, only records whose "bad_input_policy" is "skip".
            mosaic_prob: in training, the probability that an image is tiled with three others
                drawn from ``mosaic_pool`` (:func:`mosaic`).
            mosaic_pool (Sequence[dict]): the training records to draw them from: the loader's
                dataset.
            decoded_cache_mb: in training, keep decoded images in memory, up to this many MiB
                per process, and hand out copies of them; the first images read fill it.
            kwargs: see :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.skip_bad_images = skip_bad_images
        self.bad_images = set()  # file names skipped so far
        if is_train and mosaic_prob > 0:
            if not mosaic_pool:
                raise ValueError(
                    "A mosaic_prob above 0 (INPUT.MOSAIC_PROB) needs a mosaic_pool of training "
                    "records to draw the other images from"
                )
            if self.use_instance_mask or self.use_keypoint:
                raise ValueError(
                    "INPUT.MOSAIC_PROB above 0 tiles boxes only; this model also trains masks or "
                    "keypoints (MODEL.MASK_ON / MODEL.KEYPOINT_ON): set INPUT.MOSAIC_PROB 0"
                )
        self.mosaic_prob = mosaic_prob if is_train else 0.0
        self.mosaic_pool = mosaic_pool
        self.decoded_cache_bytes = int(decoded_cache_mb * 2**20) if is_train else 0
        self._decoded = {}  # (file name, reduction) -> decoded image
        self._decoded_bytes = 0

    @property
    def num_bad_images(self) -> int:
        """Distinct images skipped so far (by this process)."""
        return len(self.bad_images)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        # "" leaves it to each dataset's records ("bad_input_policy", set at registration).
        ret["skip_bad_images"] = cfg.DATASETS.BAD_INPUT_POLICY == "skip"
        ret["mosaic_prob"] = cfg.INPUT.MOSAIC_PROB
        ret["decoded_cache_mb"] = cfg.DATALOADER.DECODED_CACHE_MB
        if is_train and cfg.INPUT.SCALE_JITTER:
            ret["augmentations"] = [
                _scale_jitter(cfg) if isinstance(aug, T.ResizeShortestEdge) else aug
                for aug in ret["augmentations"]
            ]
        jitter = cfg.INPUT.COLOR_JITTER
        if is_train and jitter > 0:
            ret["augmentations"] = ret["augmentations"] + [
                T.RandomBrightness(1 - jitter, 1 + jitter),
                T.RandomContrast(1 - jitter, 1 + jitter),
                T.RandomSaturation(1 - jitter, 1 + jitter),
            ]
        return ret

    def _decode_reduction(self, dataset_dict) -> int:
        """
        In training, the largest JPEG reduction (8, 4 or 2; 1 for none) that leaves a photo at
        least as large as any size the training resize may ask of it: a 9 MP photo read at a
        256-pixel input decodes at an eighth of its side in a third of the time, and the resize
        after it costs next to nothing, where the data loader would otherwise hold up training.
        Evaluation decodes in full, as the predict command does.
        """
        if not self.is_train or "height" not in dataset_dict or "width" not in dataset_dict:
            return 1
        short, long = sorted((int(dataset_dict["height"]), int(dataset_dict["width"])))
        scale = None
        for aug in self.augmentations.augs:
            if isinstance(aug, ScaleJitterCrop):
                s = aug.max_scale * min(aug.short_edge / short, aug.max_size / long)
            elif isinstance(aug, T.ResizeShortestEdge):
                s = min(max(aug.short_edge_length) / short, aug.max_size / long)
            elif isinstance(aug, _SIZE_KEEPING):
                continue
            else:
                return 1  # an augmentation whose output size is not known here
            if scale is not None:
                return 1  # two resizes: the first one's output is not the photo
            scale = s
        return next((k for k in (8, 4, 2) if scale is not None and k * scale <= 1), 1)

    def _read_image(self, dataset_dict, reduction: int = 1):
        key = (dataset_dict["file_name"], reduction)
        cached = self._decoded.get(key)
        if cached is not None:
            return cached.copy()  # the augmentations may write into their input
        if self.is_train and dataset_dict["file_name"] in self.bad_images:
            return None  # skipped already (only skippable files get here): no second read
        try:
            image = read_shelf_image(dataset_dict, self.image_format, reduction=reduction)
        except BadImageError as e:
            if not (self.skip_bad_images or dataset_dict.get("bad_input_policy") == "skip"):
                raise
            # Training draws the same record again every epoch: warn and count it once.
            if dataset_dict["file_name"] not in self.bad_images:
                self.bad_images.add(dataset_dict["file_name"])
                logger.warning(f"Skipping bad image ({self.num_bad_images} so far here): {e}")
            if self.is_train:
                return None
            shape = (dataset_dict["height"], dataset_dict["width"], 3)
            return np.zeros(shape, dtype=np.uint8)
        if self._decoded_bytes + image.nbytes <= self.decoded_cache_bytes:
            self._decoded[key] = image.copy()
            self._decoded_bytes += image.nbytes
        return image

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image's record, in Detectron2's dataset format.
        Returns:
            dict: as DatasetMapper's, or None for a skipped training image.
        """
        mapped = self._map_one(dataset_dict)
        if mapped is None or self.mosaic_prob == 0 or np.random.rand() >= self.mosaic_prob:
            return mapped
        parts = [mapped]
        while len(parts) < 4:
            other = self._map_one(self.mosaic_pool[np.random.randint(len(self.mosaic_pool))])
            if other is not None:
                parts.append(other)
        return mosaic(parts)

    def _map_one(self, dataset_dict):
        # Written again rather than inherited only because DatasetMapper reads the image with
        # detection_utils.read_image inside __call__; semantic segmentation and precomputed
        # proposals are not supported here.
        # Boxes only: the annotations are read, never changed (_transform_annotations), so a
        # shallow copy serves; a deep one cost as much as reading the image.
        boxes_only = not (self.use_instance_mask or self.use_keypoint)
        dataset_dict = copy.copy(dataset_dict) if boxes_only else copy.deepcopy(dataset_dict)
        reduction = self._decode_reduction(dataset_dict)
        image = self._read_image(dataset_dict, reduction)
        if image is None:
            return None
        if reduction == 1:
            utils.check_image_size(dataset_dict, image)
        decoded_hw = image.shape[:2]

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        if reduction > 1:  # the boxes fit the full-size photo
            full = T.ScaleTransform(dataset_dict["height"], dataset_dict["width"], *decoded_hw)
            transforms = T.TransformList([full]) + transforms
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos = dataset_dict["annotations"]
        box_masks = self.use_instance_mask and not any("segmentation" in a for a in annos)
        if self.use_keypoint or (self.use_instance_mask and not box_masks):
            if self.use_instance_mask:
                for anno in annos:
                    anno.setdefault("segmentation", [_box_polygon(anno)])
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        # Boxes (and box masks): an image's boxes through the transforms as one array. Detectron2
        # sends them one by one (transform_instance_annotations), which took most of the mapping
        # time at 70 products an image; the arithmetic per box is the same, so are the boxes.
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        boxes = _transformed_boxes(annos, transforms).clip(min=0)
        boxes = np.minimum(boxes, list(image_shape + image_shape)[::-1])
        instances = Instances(image_shape)
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.tensor(
            [int(a["category_id"]) for a in annos], dtype=torch.int64
        )
        if box_masks:
            # A box stays a box through flips, resizes and crops, so its mask is drawn from the
            # transformed box. Transforming a polygon through a crop needs shapely, which
            # Detectron2 does not install.
            instances.gt_masks = PolygonMasks(
                [
                    [np.array([x0, y0, x1, y0, x1, y1, x0, y1], np.float64)]
                    for x0, y0, x1, y1 in boxes
                ]
            )
        dataset_dict["instances"] = utils.filter_empty_instances(instances)


def _transformed_boxes(annos, transforms) -> np.ndarray:
    """
    (N, 4) XYXY_ABS boxes of the annotations through the transforms, before clipping, as
    Detectron2's transform_instance_annotations gives them box by box: each box keeps the dtype
    it has alone, so boxes of Python ints stay integers through every transform, as they do there.
    """
    modes = {a["bbox_mode"] for a in annos}
    mode = modes.pop() if len(modes) == 1 else None
    kinds = {type(v) for a in annos for v in a["bbox"]}
    lists = all(isinstance(a["bbox"], (list, tuple)) and len(a["bbox"]) == 4 for a in annos)
    if lists and kinds in ({int}, {float}) and mode in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
        dtype = np.int64 if kinds == {int} else np.float64
        boxes = np.array([a["bbox"] for a in annos], dtype)
        if mode == BoxMode.XYWH_ABS:
            # BoxMode.convert adds in the dtype torch.tensor gives one list: int64 or float32.
            boxes = boxes.astype(np.int64 if kinds == {int} else np.float32)
            boxes[:, 2:] += boxes[:, :2]
        return transforms.apply_box(boxes.astype(dtype))
    # Anything else (array boxes, mixed modes or number types): box by box.
    boxes = [
        transforms.apply_box(
            np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)])
        )[0]
        for a in annos
    ]
    return np.array(boxes).reshape(-1, 4)


# Augmentations that keep the image's size, for _decode_reduction.
_SIZE_KEEPING = (T.RandomFlip, T.RandomBrightness, T.RandomContrast, T.RandomSaturation)


def _scale_jitter(cfg) -> ScaleJitterCrop:
    sizes = cfg.INPUT.MIN_SIZE_TRAIN
    if len(sizes) != 1 or len(cfg.INPUT.SCALE_JITTER) != 2:
        raise ValueError(
            "INPUT.SCALE_JITTER needs a (min, max) pair and one INPUT.MIN_SIZE_TRAIN to jitter "
            f"around; got {tuple(cfg.INPUT.SCALE_JITTER)} and {tuple(sizes)}"
        )
    return ScaleJitterCrop(sizes[0], cfg.INPUT.MAX_SIZE_TRAIN, *cfg.INPUT.SCALE_JITTER)


def _box_polygon(anno):
    x0, y0, x1, y1 = BoxMode.convert(anno["bbox"], anno["bbox_mode"], BoxMode.XYXY_ABS)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


class GaussianDatasetMapper(ShelfDatasetMapper):
    """
    A :class:`ShelfDatasetMapper` that also renders the Gaussian map of object centres for
    training, from the boxes as augmented, so flips, resizes and crops move the map exactly with
    the boxes. Adds ``dataset_dict["gaussian_map"]``: float32 tensor (ceil(H/s), ceil(W/s)) for the
    augmented image of size (H, W) and the renderer's stride s.
    """

    @configurable
    def __init__(self, is_train: bool, *, gaussian_renderer: GaussianMapRenderer, **kwargs):
        """
        Args:
            gaussian_renderer: renders the target map from (N, 4) XYXY boxes.
            kwargs: see :class:`ShelfDatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.gaussian_renderer = gaussian_renderer

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["gaussian_renderer"] = build_gaussian_renderer(cfg)
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = super().__call__(dataset_dict)
        if dataset_dict is not None and "instances" in dataset_dict:
            boxes = dataset_dict["instances"].gt_boxes.tensor.numpy()
            image_size = dataset_dict["image"].shape[-2:]
            dataset_dict["gaussian_map"] = torch.as_tensor(
                self.gaussian_renderer(boxes, image_size)
            )
        return dataset_dict


def build_gaussian_renderer(cfg) -> GaussianMapRenderer:
    """The target renderer that ``cfg.MODEL.GAUSSIAN`` describes."""
    g = cfg.MODEL.GAUSSIAN
    return GaussianMapRenderer(
        stride=g.OUT_STRIDE, template_size=g.TEMPLATE_SIZE, sigma=g.SIGMA, accumulate=g.ACCUMULATE
    )
