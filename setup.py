#!/usr/bin/env python
"""gaussian-retina: a Detectron2 project add-on (Kant, BMVC 2021).

torch, torchvision and detectron2 are prerequisites and are not installed from here:
install them from their official instructions first (see README.md).
"""
from setuptools import find_packages, setup

setup(
    name="gaussian_retina",
    version="0.1.0",
    description="RetinaNet with learned Gaussian maps for dense object detection (Detectron2 add-on)",
    packages=find_packages(exclude=("tests", "tools", "configs")),
    python_requires=">=3.8",
    install_requires=[
        "fvcore",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "numpy",
        "scipy",
    ],
    entry_points={
        "console_scripts": ["gaussian-retina-predict=gaussian_retina.predict:main"],
    },
    extras_require={
        # Export to ONNX and running it (gaussian_retina.inference.export, tools/export_model.py).
        "export": ["onnx", "onnxruntime"],
        "test": ["pytest", "onnx", "onnxruntime"],
        "dev": ["pytest"],
        # tools/mutation_check.py: a measure of the tests, never run by the suite or CI.
        "mutation": ["pytest", "mutmut>=3.8,<4"],
    },
)
