"""
The predefined splits (SKU-110K, the product-detection benchmark, the synthetic shelves),
registered under ``$DETECTRON2_DATASETS`` (default ``./datasets``) as Detectron2's own
``builtin.py`` does. See datasets/README.md for the trees.
"""

import os

from .register import register_retail_dataset
from .synthetic_shelves import register_synthetic_shelves

__all__ = ["register_all_sku110k", "register_all_product_benchmark", "register_all_retail"]

# name -> (image folder, annotation file), relative to the datasets root.
_PREDEFINED_SPLITS_SKU110K = {
    f"sku110k_{split}": ("SKU110K/images", f"SKU110K/annotations/annotations_{split}.csv")
    for split in ("train", "val", "test")
}

# The generic product-detection benchmark (Varadarajan, Kant, Srivastava, arXiv 1912.09476):
# test-only sets, folder and CSV names as in the benchmark's annotations/ folder.
_PREDEFINED_SPLITS_PRODUCT_BENCHMARK = {
    "benchmark_webmarket": (
        "ProductBenchmark/WebMarket/images",
        "ProductBenchmark/WebMarket/WebMarket_coco_gt_object.csv",
    ),
    "benchmark_gp": (
        "ProductBenchmark/GP/images",
        "ProductBenchmark/GP/Grocery_products_coco_gt_object.csv",
    ),
    "benchmark_capg_gp": (
        "ProductBenchmark/CAPG/images",
        "ProductBenchmark/CAPG/CAPG_coco_gt_object.csv",
    ),
    "benchmark_holoselecta": (
        "ProductBenchmark/Holoselecta/images",
        "ProductBenchmark/Holoselecta/Holoselecta_coco_gt_object.csv",
    ),
    "benchmark_tobacco_shelves": (
        "ProductBenchmark/TobaccoShelves/images",
        "ProductBenchmark/TobaccoShelves/TobaccoShelves_coco_gt_object.csv",
    ),
}


def _register_splits(root, splits, fmt):
    for name, (image_root, annotations) in splits.items():
        register_retail_dataset(
            name, os.path.join(root, image_root), os.path.join(root, annotations), fmt
        )


def register_all_sku110k(root: str) -> None:
    """sku110k_train / sku110k_val / sku110k_test (8,233 / 588 / 2,941 images)."""
    _register_splits(root, _PREDEFINED_SPLITS_SKU110K, "sku110k")


def register_all_product_benchmark(root: str) -> None:
    """benchmark_{webmarket,gp,capg_gp,holoselecta,tobacco_shelves}."""
    _register_splits(root, _PREDEFINED_SPLITS_PRODUCT_BENCHMARK, "benchmark")


def register_all_retail(root: str) -> None:
    register_all_sku110k(root)
    register_all_product_benchmark(root)
    register_synthetic_shelves(root)
