from . import datasets  # noqa: F401  registers the datasets
from .dataset_mapper import GaussianDatasetMapper, ShelfDatasetMapper
from .gaussian_target import GaussianMapRenderer, render_gaussian_map
