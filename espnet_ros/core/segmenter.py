"""The Segmenter: camera frames in, class ids (and optional confidence) out, one batched forward pass per call.

It owns input validation, the fast version of the weights' preprocessing recipe (float resize to the network
size, then the per-channel affine map of :class:`~espnet_ros.core.weights.Preprocessing`), inference under
``torch.inference_mode()`` through a CPU backend of :mod:`espnet_ros.core.accel` (by default the fastest exact one
measured, see docs/performance.md) or the CUDA pipeline of :mod:`espnet_ros.core.gpu`, argmax (``max(dim)[1]``,
much faster than ``argmax`` on the CPU) and the nearest resize back to the camera resolution with pixel centres
aligned, so that mask pixel ``(r, c)`` describes camera pixel ``(r, c)``. It knows nothing of ROS.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch

from espnet_ros.core.accel import Backend, BackendError, make_backend, resolve_backend
from espnet_ros.core.errors import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, EspnetRosError, ImageError
from espnet_ros.core.fpmode import denormals_flushed
from espnet_ros.core.gpu import GpuPipeline, confidence_u8, nearest_indices
from espnet_ros.core.labels import LabelSet
from espnet_ros.core.preprocess import preprocess_into
from espnet_ros.core.weights import WeightsPreset, build_model, get_preset

__all__ = [
    "BackendError",
    "ColorOrder",
    "DeviceError",
    "OutputSize",
    "SegmentationResult",
    "Segmenter",
    "resize_labels",
    "resolve_device",
    "validate_image",
]

_log = logging.getLogger(__name__)

ColorOrder = Literal["bgr", "rgb"]
OutputSize = Literal["input", "network"]


class DeviceError(EspnetRosError, ValueError):
    """The requested torch device is malformed or not usable on this machine."""


@dataclass(frozen=True)
class SegmentationResult:
    """The segmentation of one frame.

    Attributes:
        class_ids: ``(H_out, W_out) uint8`` class ids of the preset's label set.
        confidence: ``(H_out, W_out) uint8`` max softmax probability scaled to 0..255, or ``None`` if not asked.
        input_size: ``(width, height)`` of the frame that was segmented.
        output_size: ``(width, height)`` of ``class_ids`` (the frame's size or the network's).
    """

    class_ids: npt.NDArray[np.uint8]
    confidence: npt.NDArray[np.uint8] | None
    input_size: tuple[int, int]
    output_size: tuple[int, int]


def validate_image(image: object, what: str = "image") -> None:
    """Check that ``image`` is a ``(H, W, 3) uint8`` C-contiguous array within the documented size limits.

    Raises:
        ImageError: naming what was wrong and what is expected.
    """
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{what} must be a numpy array of shape (H, W, 3) and dtype uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(
            f"{what} has dtype {image.dtype}, expected uint8 (0..255); convert 16-bit or float images first, "
            "e.g. (img / 257).astype(np.uint8) or (img * 255).clip(0, 255).astype(np.uint8)"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(
            f"{what} has shape {image.shape}, expected (H, W, 3); convert grey or 4-channel images with "
            "cv2.cvtColor (GRAY2BGR, BGRA2BGR) first"
        )
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(f"{what} is empty ({w}x{h} pixels)")
    if h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE or h * w > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{what} is {w}x{h} pixels, beyond the limit of {MAX_IMAGE_SIDE} pixels a side and "
            f"{MAX_IMAGE_PIXELS} pixels in all; downscale it first"
        )
    if not image.flags.c_contiguous:
        raise ImageError(f"{what} is not C-contiguous (a strided view?); pass np.ascontiguousarray(image)")


def resolve_device(device: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable :class:`torch.device`.

    ``auto`` picks CUDA when a GPU is usable and the CPU otherwise, and logs the choice and why. ``cuda`` without a
    usable GPU is a :class:`DeviceError`, never a silent fallback.
    """
    d = device.strip().lower()
    if d == "auto":
        if torch.cuda.is_available():
            chosen = torch.device("cuda:0")
            _log.info("device auto: chose %s (%s)", chosen, torch.cuda.get_device_name(0))
            return chosen
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        _log.info("device auto: chose cpu (%s)", why)
        return torch.device("cpu")
    try:
        dev = torch.device(d)
    except RuntimeError as exc:
        raise DeviceError(f"invalid device {device!r}: expected auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceError(f"unsupported device {device!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise DeviceError(f"device {device!r} requested but {why}; use device 'cpu' or 'auto'")
    index = dev.index if dev.index is not None else 0
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def resize_labels(labels: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour resize of a ``(h, w) uint8`` map to ``size`` = ``(width, height)``, pixel centres aligned.

    Output pixel ``(r, c)`` takes input pixel ``(floor((r + 0.5) * h / H), floor((c + 0.5) * w / W))``, exactly
    (OpenCV's ``INTER_NEAREST_EXACT`` rounds differently for non-integer ratios, so it is used only for integer
    upscaling, where both agree).
    """
    h, w = labels.shape
    width, height = size
    if (w, h) == (width, height):
        return labels
    if width % w == 0 and height % h == 0:
        return np.asarray(cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST_EXACT), np.uint8)
    rows = labels.take(nearest_indices(h, height), axis=0)
    return rows.take(nearest_indices(w, width), axis=1)


class Segmenter:
    """Segment ``(H, W, 3) uint8`` camera frames with a pretrained ESPNet.

    Args:
        preset: a preset name (see ``espnet-ros presets``) or a :class:`WeightsPreset`.
        weights_dir: folder holding the weights (default: ``$ESPNET_ROS_WEIGHTS_DIR`` or the user cache).
        weights_file: an explicit weights file (still verified against the preset's sha256).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        output_size: ``input`` (class ids at the frame's resolution, pixel-aligned) or ``network``.
        network_size: network input ``(width, height)``, multiples of 8; default the preset's native size.
        num_threads: torch intra-op threads on the CPU (default: leave torch's setting).
        half: on CUDA, run the network in float16 (default: yes; it agrees with fp32 on >= 99.9% of pixels).
        backend: CPU inference backend (see :mod:`espnet_ros.core.accel`): ``auto`` (default: ``$ESPNET_ROS_BACKEND``
            if set, else the fastest exact path measured on the CPU), ``eager`` (the reference network as written),
            ``fused`` or ``compiled`` (AOTInductor, built once and cached).
        cache_dir: where compiled / exported artifacts are kept (default ``$ESPNET_ROS_CACHE_DIR`` or
            ``~/.cache/espnet_ros/compiled``).
        flush_denormals: on the CPU with a fast backend, run the network with subnormal floats flushed to zero in
            the calling thread and its OpenMP team, restored after each call (:mod:`espnet_ros.core.fpmode`; ~20 %
            faster on Intel CPUs, labels unchanged). ``eager`` never does; ``$ESPNET_ROS_FLUSH_DENORMALS=0`` turns
            it off everywhere.

    Raises:
        WeightsError: missing or damaged weights. DeviceError: unusable device. BackendError: unknown or unusable
        backend.
    """

    def __init__(
        self,
        preset: str | WeightsPreset = "cityscapes",
        *,
        weights_dir: str | os.PathLike[str] | None = None,
        weights_file: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        output_size: OutputSize = "input",
        network_size: tuple[int, int] | None = None,
        num_threads: int | None = None,
        half: bool | None = None,
        backend: str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        flush_denormals: bool = True,
    ) -> None:
        self.preset = get_preset(preset)
        self.labels: LabelSet = self.preset.label_set
        if output_size not in ("input", "network"):
            raise ValueError(f"output_size must be 'input' or 'network', got {output_size!r}")
        self.output_size: OutputSize = output_size
        size = tuple(network_size) if network_size is not None else self.preset.input_size
        if len(size) != 2 or any(int(s) <= 0 or int(s) % 8 for s in size):
            raise ValueError(f"network_size must be (width, height) with positive multiples of 8, got {size}")
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.device = resolve_device(device)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.backend: str = resolve_backend(backend, self.device)
        model = build_model(self.preset, weights_dir, weights_file)
        self._model = model.to(self.device)
        gain, offset = self.preset.preprocessing.affine()
        self._gain_hwc = torch.from_numpy(gain)
        self._offset_hwc = torch.from_numpy(offset)
        self.forward_batch_sizes: Counter[int] = Counter()
        self._gpu: GpuPipeline | None = None
        self._cpu: Backend | None = None
        if self.device.type == "cuda":
            self._gpu = GpuPipeline(self._model, self.preset, self.input_size, self.device, half=half)
            _log.info("CUDA path on %s: float16=%s, torch.compile=%s, CUDA graphs per batch shape", self.device,
                      self._gpu.half, self._gpu.compiled)
        else:
            self._cpu = make_backend(backend, self._model, self.preset, self.input_size, device=self.device,
                                     cache=cache_dir)
            self.backend = self._cpu.name  # what runs (auto falls back to 'fused' when 'compiled' is unusable)
            _log.info("CPU backend %s for %s at %dx%d, %d torch threads", self._cpu.name, self.preset.name,
                      self.input_size[0], self.input_size[1], torch.get_num_threads())
        # the reference network ('eager') keeps IEEE arithmetic; the fast paths run with denormals flushed
        self.flush_denormals: bool = bool(flush_denormals) and self._cpu is not None and self.backend != "eager"

    @property
    def inference_path(self) -> str:
        """What computes the labels, in words (for logs and diagnostics), e.g. ``CPU backend compiled``."""
        if self._gpu is not None:
            return (f"CUDA pipeline ({'float16' if self._gpu.half else 'float32'}, "
                    f"{'compiled' if self._gpu.compiled else 'uncompiled'}, "
                    f"{'CUDA graphs' if self._gpu.graphs else 'no graphs'})")
        return f"CPU backend {self.backend}"

    @property
    def model(self) -> torch.nn.Module:
        """The underlying network (eval mode)."""
        return self._model

    def _cpu_backend(self) -> Backend:
        if self._cpu is None:
            raise RuntimeError(f"preprocess/forward are the CPU path; on {self.device} use segment or segment_batch")
        return self._cpu

    def preprocess(
        self, images: Sequence[npt.NDArray[np.uint8]], color_orders: Sequence[ColorOrder]
    ) -> torch.Tensor:
        """Turn frames into the network input ``(N, 3, h, w) float32`` (BGR channels), on the CPU.

        The batch is channels-last: each frame goes through :func:`~espnet_ros.core.preprocess.preprocess_into`
        straight into its slot of the batch; a frame of exactly twice the input size goes, with the compiled
        backend, through its compiled preprocessing
        (:class:`~espnet_ros.core.accel.CompiledPreprocess`) — the same values either way. (On CUDA,
        :class:`GpuPipeline` does all of this.)
        """
        compiled = self._cpu_backend().preprocess_half
        w, h = self.input_size
        if compiled is not None and len(images) == 1 and images[0].shape[:2] == (2 * h, 2 * w):
            return compiled(images[0], color_orders[0]).unsqueeze(0).permute(0, 3, 1, 2)
        batch = torch.empty((len(images), h, w, 3), dtype=torch.float32)
        for i, (img, order) in enumerate(zip(images, color_orders, strict=True)):
            size = (img.shape[1], img.shape[0])
            if compiled is not None and size == (2 * w, 2 * h):
                batch[i].copy_(compiled(img, order))
            else:
                preprocess_into(img, order, self._gain_hwc, self._offset_hwc, batch[i])
        return batch.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on a preprocessed batch; return logits at the network input resolution."""
        backend = self._cpu_backend()
        self.forward_batch_sizes[int(x.shape[0])] += 1
        with denormals_flushed(self.flush_denormals):
            return backend.logits(x)

    def forward_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on a preprocessed batch; return ``(N, h, w) uint8`` class ids at the network resolution."""
        backend = self._cpu_backend()
        self.forward_batch_sizes[int(x.shape[0])] += 1
        with denormals_flushed(self.flush_denormals):
            return backend.labels(x)

    def segment(
        self,
        image: npt.NDArray[np.uint8],
        *,
        color_order: ColorOrder = "bgr",
        confidence: bool = False,
        output_size: OutputSize | None = None,
    ) -> SegmentationResult:
        """Segment one ``(H, W, 3) uint8`` frame whose channel order is ``color_order``."""
        return self.segment_batch([image], color_order=color_order, confidence=confidence, output_size=output_size)[0]

    def segment_batch(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        *,
        color_order: ColorOrder | Sequence[ColorOrder] = "bgr",
        confidence: bool = False,
        output_size: OutputSize | None = None,
    ) -> list[SegmentationResult]:
        """Segment several frames (of any sizes) in one forward pass; results come in the same order."""
        if len(images) == 0:
            return []
        orders: list[ColorOrder] = (
            [color_order] * len(images) if isinstance(color_order, str) else list(color_order)
        )
        if len(orders) != len(images):
            raise ValueError(f"got {len(images)} images but {len(orders)} colour orders")
        for i, (img, order) in enumerate(zip(images, orders, strict=True)):
            validate_image(img, f"image {i}" if len(images) > 1 else "image")
            if order not in ("bgr", "rgb"):
                raise ImageError(f"colour order {order!r} is not 'bgr' or 'rgb'")
        out_mode = output_size or self.output_size
        if out_mode not in ("input", "network"):
            raise ValueError(f"output_size must be 'input' or 'network', got {out_mode!r}")
        if self._gpu is not None:
            sizes = [
                (int(im.shape[1]), int(im.shape[0])) if out_mode == "input" else self.input_size for im in images
            ]
            self.forward_batch_sizes[len(images)] += 1
            outs = self._gpu.run(images, orders, sizes, confidence)
            return [
                SegmentationResult(o.class_ids, o.confidence, (int(im.shape[1]), int(im.shape[0])), size)
                for o, im, size in zip(outs, images, sizes, strict=True)
            ]
        with torch.inference_mode():
            x = self.preprocess(images, orders)
            conf = None
            if confidence:
                logits = self.forward(x)
                best, ids = logits.max(1)
                conf = confidence_u8(logits, best).numpy()
                ids = ids.to(torch.uint8)
            else:
                ids = self.forward_labels(x)
            ids_np = ids.cpu().numpy()
        results = []
        for i, img in enumerate(images):
            in_size = (int(img.shape[1]), int(img.shape[0]))
            target = in_size if out_mode == "input" else self.input_size
            cls = resize_labels(ids_np[i], target)
            cf = resize_labels(conf[i], target) if conf is not None else None
            results.append(SegmentationResult(cls, cf, in_size, target))
        return results
