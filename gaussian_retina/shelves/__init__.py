"""
The shelves wing: shelf datasets for Detectron2. SKU-110K, the generic product-detection
benchmark, the user's own shelves in any of four formats (``register_retail_dataset``), the
procedural synthetic shelves, and the accounting of bad input. It may import the core (the image
reader); the core never imports it.

Importing registers the predefined splits under ``$DETECTRON2_DATASETS`` (default
``./datasets``); nothing is read until a split is loaded, so absent folders are fine.
"""

import os

from .bad_input import AnnotationError, InputReport, Problem, check_bad_input_policy
from .builtin import (
    register_all_product_benchmark,
    register_all_retail,
    register_all_sku110k,
)
from .register import (
    FORMATS,
    RetailDatasetSpec,
    configure_shelf_datasets,
    detect_format,
    ensure_coco_json,
    load_retail_table,
    register_cfg_datasets,
    register_retail_dataset,
    retail_dataset_spec,
)
from .synthetic_shelves import register_synthetic_shelves

__all__ = [
    "AnnotationError",
    "FORMATS",
    "InputReport",
    "Problem",
    "RetailDatasetSpec",
    "check_bad_input_policy",
    "configure_shelf_datasets",
    "detect_format",
    "ensure_coco_json",
    "load_retail_table",
    "register_all_product_benchmark",
    "register_all_retail",
    "register_all_sku110k",
    "register_cfg_datasets",
    "register_retail_dataset",
    "register_synthetic_shelves",
    "retail_dataset_spec",
]

register_all_retail(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
