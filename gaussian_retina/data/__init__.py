from .dataset_mapper import GaussianDatasetMapper, ShelfDatasetMapper, build_gaussian_renderer
from .gaussian_target import GaussianMapRenderer, render_gaussian_map
from .image_reader import BadImageError, read_image_size, read_shelf_image
from .mosaic import mosaic
from .scale_jitter import ScaleJitterCrop
