"""
Inference on folders of shelf photos: a batched, tiled predictor, counts, and writers; the
``gaussian-retina-predict`` command (``gaussian_retina/predict.py``) is argument parsing over these.
"""

from .counting import (
    calibrate_threshold,
    count_detections,
    count_errors,
    count_map_mass,
    count_map_peaks,
)
from .predictor import Prediction, ShelfPredictor, map_at_centres, stitch_maps
from .runner import (
    calibrate_counts,
    find_images,
    products_per_image,
    run_prediction,
)
from .tiling import TileGrid, auto_tile_grid, fixed_tile_grid, merge_tile_detections, parse_tiling
from .writers import (
    CSV_COLUMNS,
    CocoResultsWriter,
    read_coco_results,
    read_detections_csv,
    write_detections_csv,
)
