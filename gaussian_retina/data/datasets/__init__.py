"""
Shelf datasets for Detectron2: SKU-110K, the generic product-detection benchmark, the user's
own shelves in any of four formats (``register_retail_dataset``), and synthetic shelves.

Importing registers the predefined splits under ``$DETECTRON2_DATASETS`` (default
``./datasets``); nothing is read until a split is loaded, so absent folders are fine.
"""

import os

from .bad_input import (
    AnnotationError,
    InputReport,
    Problem,
    get_bad_input_policy,
    set_bad_input_policy,
)
from .builtin import register_all_product_benchmark, register_all_retail, register_all_sku110k
from .register import (
    FORMATS,
    detect_format,
    ensure_coco_json,
    load_retail_table,
    register_retail_dataset,
    set_coco_cache_dir,
)
from .synthetic_shelves import register_synthetic_shelves

__all__ = [
    "AnnotationError",
    "FORMATS",
    "InputReport",
    "Problem",
    "detect_format",
    "ensure_coco_json",
    "get_bad_input_policy",
    "load_retail_table",
    "register_all_product_benchmark",
    "register_all_retail",
    "register_all_sku110k",
    "register_retail_dataset",
    "register_synthetic_shelves",
    "set_bad_input_policy",
    "set_coco_cache_dir",
]

register_all_retail(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
