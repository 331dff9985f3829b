"""
Deployment: export of the RetinaNet family to TorchScript and ONNX, and running the exported
files back (``tools/export_model.py`` is argument parsing over these).
"""

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
