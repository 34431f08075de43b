"""The upstream recipe as written, kept as the yardstick every fast path is measured and checked against.

:class:`BaselinePipeline` turns a ``(H, W, 3) uint8 BGR`` camera frame into class ids the way the upstream
ESPNet scripts do it, step by step and without shortcuts: the numpy/OpenCV preprocessing of
:meth:`~espnet_ros.core.weights.Preprocessing.apply_numpy` (the single home of the recipe), the eager fp32 NCHW
network from :func:`~espnet_ros.core.weights.build_model`, ESPNet-C logits upsampled x8 bilinearly, ``argmax``
over all classes, and a numpy nearest resize back to the camera resolution with pixel centres aligned
(``out[r, c] = in[floor((r + .5) * h / H), floor((c + .5) * w / W)]``, as
:func:`~espnet_ros.core.segmenter.resize_labels`). It is slow on purpose; nothing on a hot path uses it.
:func:`colorize_numpy` and :func:`overlay_numpy` render the way the upstream visualisation script does (a loop
over classes, then ``cv2.addWeighted``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import numpy.typing as npt
import torch

from espnet_ros.core.model import upsample_logits
from espnet_ros.core.weights import WeightsPreset, build_model, get_preset

__all__ = ["BaselinePipeline", "colorize_numpy", "nearest_resize_numpy", "overlay_numpy"]


def nearest_resize_numpy(labels: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Nearest resize of a ``(h, w)`` map to ``size = (width, height)`` with numpy fancy indexing, centres aligned."""
    h, w = labels.shape
    width, height = size
    rows = np.floor((np.arange(height, dtype=np.float64) + 0.5) * (h / height)).astype(np.intp)
    cols = np.floor((np.arange(width, dtype=np.float64) + 0.5) * (w / width)).astype(np.intp)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]])


def colorize_numpy(labels: npt.NDArray[np.uint8], palette: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Colour mask ``(H, W, 3) uint8`` from a ``(H, W)`` id map, one boolean mask per class (the upstream loop).

    ``palette`` is ``(K, 3) uint8`` in the channel order wanted; ids without a colour stay black.
    """
    out = np.zeros((*labels.shape, 3), np.uint8)
    for class_id, color in enumerate(palette):
        out[labels == class_id] = color
    return out


def overlay_numpy(
    image: npt.NDArray[np.uint8], color: npt.NDArray[np.uint8], alpha: float = 0.5
) -> npt.NDArray[np.uint8]:
    """``image * (1 - alpha) + color * alpha``, rounded, as the upstream script blends (``cv2.addWeighted``)."""
    return np.asarray(cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0), np.uint8)


class BaselinePipeline:
    """The upstream-style CPU pipeline: numpy preprocessing, eager fp32 NCHW network, ``argmax``, numpy resize.

    Args:
        preset: a preset name or :class:`WeightsPreset`.
        weights_dir, weights_file: where the verified weights are (see :func:`build_model`).
        network_size: network input ``(width, height)``; default the preset's native size.
        model: an already built network for ``preset`` (shared with a fast path to save the load).
        device: where the network runs (the upstream recipe on a GPU: host preprocessing, upload, eager fp32,
            ``argmax``, download, host resize); the model is moved there.
    """

    def __init__(
        self,
        preset: str | WeightsPreset = "cityscapes",
        *,
        weights_dir: str | os.PathLike[str] | None = None,
        weights_file: str | os.PathLike[str] | None = None,
        network_size: tuple[int, int] | None = None,
        model: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.preset = get_preset(preset)
        self.input_size: tuple[int, int] = tuple(network_size) if network_size else self.preset.input_size  # type: ignore[assignment]
        self.device = torch.device(device)
        net = model if model is not None else build_model(self.preset, weights_dir, weights_file)
        self.model = net.eval().to(self.device)

    def preprocess(self, image_bgr: npt.NDArray[np.uint8]) -> torch.Tensor:
        """``(H, W, 3) uint8 BGR`` → network input ``(1, 3, h, w) float32`` NCHW, by the numpy recipe."""
        x = torch.from_numpy(self.preset.preprocessing.apply_numpy(image_bgr, self.input_size)).unsqueeze(0)
        return x.to(self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The eager fp32 network on a preprocessed batch; logits at the network input resolution."""
        with torch.no_grad():
            out = self.model(x)
            if self.preset.output_stride != 1:
                out = upsample_logits(out, self.preset.output_stride)
        return out

    def network_labels(self, image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Class ids ``(h, w) uint8`` at the network resolution."""
        logits = self.logits(self.preprocess(image_bgr))
        return np.asarray(logits[0].argmax(0).cpu().numpy(), dtype=np.uint8)

    def __call__(self, image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Class ids ``(H, W) uint8`` at the camera resolution of ``image_bgr``."""
        ids = self.network_labels(image_bgr)
        return nearest_resize_numpy(ids, (int(image_bgr.shape[1]), int(image_bgr.shape[0])))
