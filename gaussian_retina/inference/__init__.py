"""
Using a trained model: a batched, tiled predictor over folders of shelf photos, counts and
writers (the ``gaussian-retina-predict`` command, ``gaussian_retina/predict.py``, is argument
parsing over these), and export of the RetinaNet family to TorchScript and ONNX
(``tools/export_model.py``).
"""

from .counting import (
    DEFAULT_COUNT_THRESHOLD,
    DEFAULT_PEAK_THRESHOLD,
    calibrate_threshold,
    count_detections,
    count_errors,
    count_map_mass,
    count_map_peaks,
)
from .export import (
    compare_detections,
    export_onnx,
    export_torchscript,
    load_onnx,
    resize_for_test,
    run_onnx,
    run_pytorch,
    run_torchscript,
)
from .overlay import ShelfVisualizer, draw_overlay, save_png
from .calibration import calibrate_counts, calibration_cache_dir
from .predictor import Prediction, ShelfPredictor, map_at_centres, probe_product_side, stitch_maps
from .run_outputs import RunOutputs, SettingsMismatchError
from .runner import (
    find_images,
    input_root,
    output_names,
    photo_counts,
    products_per_image,
    run_prediction,
    training_product_side,
)
from .tiling import (
    TileGrid,
    auto_tile_grid,
    fixed_tile_grid,
    merge_tile_detections,
    parse_tiling,
    single_pass_scale,
)
from .writers import (
    CSV_COLUMNS,
    CocoResultsWriter,
    detections_csv_rows,
    read_coco_results,
    read_detections_csv,
    write_detections_csv,
)
