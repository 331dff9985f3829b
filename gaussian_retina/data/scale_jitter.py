import numpy as np
from detectron2.data import transforms as T

__all__ = ["ScaleJitterCrop"]


class ScaleJitterCrop(T.Augmentation):
    """
    Scale jitter at a fixed input size. The image is resized as
    ``ResizeShortestEdge(short_edge, max_size)`` would, times a random factor in
    ``[min_scale, max_scale]``; a random window of the unjittered size is then cropped from it,
    or it is padded at the bottom and right up to that size.

    This is Detectron2's ``ResizeScale`` + ``FixedSizeCrop`` (the "large-scale jitter" of Ghiasi
    et al.), with the target box taken from each image's own orientation rather than one fixed
    box, so portrait and landscape shelves both keep their usual input size. Every image of one
    size gives one input size: multi-scale training at the cost of single-scale training, where
    ResizeShortestEdge over a range of sizes cost 1.7 times as much on the CPU
    (results/synthetic_recipe.md).
    """

    def __init__(
        self,
        short_edge: int,
        max_size: int,
        min_scale: float,
        max_scale: float,
        pad_value: float = 128.0,
    ):
        """
        Args:
            short_edge, max_size: the unjittered size, as for ResizeShortestEdge.
            min_scale, max_scale: the range of the random factor on that size.
            pad_value: the pixel value of the padding (128: about the pixel mean).
        """
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"ScaleJitterCrop needs 0 < min_scale <= max_scale, got "
                f"({min_scale}, {max_scale})"
            )
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        th, tw = T.ResizeShortestEdge.get_output_shape(h, w, self.short_edge, self.max_size)
        resize = T.ResizeScale(self.min_scale, self.max_scale, th, tw).get_transform(image)
        new_h, new_w = resize.new_h, resize.new_w
        crop_h, crop_w = min(new_h, th), min(new_w, tw)
        y0 = np.random.randint(new_h - crop_h + 1)
        x0 = np.random.randint(new_w - crop_w + 1)
        return T.TransformList(
            [
                resize,
                T.CropTransform(x0, y0, crop_w, crop_h, new_w, new_h),
                T.PadTransform(0, 0, tw - crop_w, th - crop_h, crop_w, crop_h, self.pad_value),
            ]
        )
