"""The ROS-free core of espnet_ros: model, weights, labels, segmenter, rendering, evaluation and geometry.

Nothing under this package imports rclpy or ROS message packages; the node and the command line build on it.
Heavy submodules are imported on first use of their names, so ``import espnet_ros.core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CAMVID",
    "CITYSCAPES",
    "PRESETS",
    "ConfusionMatrix",
    "EspnetRosError",
    "EvalResult",
    "GpuPipeline",
    "ImageError",
    "LabelSet",
    "Renderer",
    "SegmentationResult",
    "Segmenter",
    "WeightsError",
    "WeightsPreset",
    "get_preset",
]

_LAZY = {
    "CAMVID": "labels",
    "CITYSCAPES": "labels",
    "LabelSet": "labels",
    "EspnetRosError": "errors",
    "ImageError": "errors",
    "WeightsError": "errors",
    "PRESETS": "weights",
    "WeightsPreset": "weights",
    "get_preset": "weights",
    "SegmentationResult": "segmenter",
    "Segmenter": "segmenter",
    "Renderer": "render",
    "ConfusionMatrix": "evaluate",
    "EvalResult": "evaluate",
    "GpuPipeline": "gpu",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'espnet_ros.core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"espnet_ros.core.{module}"), name)
