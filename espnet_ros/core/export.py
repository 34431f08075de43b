"""ONNX export of a preset or model file, for deployment with ONNX Runtime or TensorRT outside espnet_ros.

:func:`export_onnx` writes the reference network (batch norms as they are; the deploying runtime folds them) with a
dynamic batch, height and width (multiples of 8). By default the graph takes the preprocessed input
``(N, 3, H, W) float32`` (BGR, ``(x - mean) / std / 255``, :class:`~espnet_ros.core.weights.Preprocessing`) and
returns logits ``(N, K, H, W)`` (ESPNet-C's upsampled x8 bilinearly); ``with_preprocessing`` makes it take
``(N, H, W, 3) uint8`` BGR frames already at the network size, ``argmax`` makes it return ``(N, H, W) uint8`` class
ids. The model's metadata (name, classes with colours, preprocessing, input size, both flags) is stored in the
ONNX file's ``metadata_props``. :func:`check_onnx` runs the file in ONNX Runtime on a frame and compares it with
PyTorch. No ROS.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.weights import WeightsPreset, build_model

__all__ = ["ExportError", "OnnxCheck", "check_onnx", "export_onnx", "sample_frame"]


class ExportError(EspnetRosError):
    """The export cannot be written or does not agree with PyTorch."""


@dataclass(frozen=True)
class OnnxCheck:
    """ONNX Runtime against PyTorch on one frame: label agreement (0..1), max |logit difference|, input kind."""

    agreement: float
    max_abs_diff: float
    input_desc: str


class _Deploy(nn.Module):
    """The network with optional preprocessing in front and argmax behind (what is exported)."""

    def __init__(self, model: nn.Module, preset: WeightsPreset, with_preprocessing: bool, argmax: bool) -> None:
        super().__init__()
        self.model = model
        self.stride = preset.output_stride
        self.with_preprocessing = with_preprocessing
        self.argmax = argmax
        gain, offset = preset.preprocessing.affine()
        self.gain: Tensor
        self.offset: Tensor
        self.register_buffer("gain", torch.from_numpy(gain).view(1, 3, 1, 1))
        self.register_buffer("offset", torch.from_numpy(offset).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.with_preprocessing:
            x = x.permute(0, 3, 1, 2).float() * self.gain + self.offset
        y = self.model(x)
        if self.stride != 1:
            y = F.interpolate(y, scale_factor=float(self.stride), mode="bilinear", align_corners=False)
        if self.argmax:
            return y.max(1)[1].to(torch.uint8)
        return y


def sample_frame(size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A deterministic street-like ``(H, W, 3) uint8`` BGR frame (sky, buildings, road) of ``size`` (width, height)."""
    w, h = size
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    img[:] = np.where(rows[..., None] < 0.35, [200, 160, 120], [90, 90, 90])  # BGR sky / grey
    for x0 in range(0, w, max(w // 6, 1)):
        top = int(h * rng.uniform(0.1, 0.3))
        img[top:int(h * 0.55), x0:x0 + max(w // 8, 1)] = rng.uniform(40, 160, 3)
    img[int(h * 0.6):] = [128, 64, 128][::-1]
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _size(preset: WeightsPreset, network_size: tuple[int, int] | None) -> tuple[int, int]:
    size = tuple(network_size) if network_size is not None else preset.input_size
    if len(size) != 2 or any(int(s) <= 0 or int(s) % 8 for s in size):
        raise ExportError(f"export size {size}: width and height must be positive multiples of 8")
    return int(size[0]), int(size[1])


def export_onnx(
    preset: WeightsPreset,
    path: str | os.PathLike[str],
    *,
    network_size: tuple[int, int] | None = None,
    with_preprocessing: bool = False,
    argmax: bool = False,
    opset: int = 17,
    weights_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``preset`` (a registry preset or :func:`~espnet_ros.core.modelfile.load_model`'s) as ONNX to ``path``."""
    try:
        import onnx
    except ImportError as exc:
        raise ExportError("export needs the onnx package: pip install onnx onnxruntime") from exc
    out = Path(path)
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {out.parent} does not exist")
    w, h = _size(preset, network_size)
    module = _Deploy(build_model(preset, weights_dir), preset, with_preprocessing, argmax).eval()
    probe: Tensor = (torch.from_numpy(sample_frame((w, h))).unsqueeze(0) if with_preprocessing
                     else torch.zeros(1, 3, h, w))
    spatial = {0: "batch", 1: "height", 2: "width"} if with_preprocessing else {0: "batch", 2: "height", 3: "width"}
    out_axes = {0: "batch", 1: "height", 2: "width"} if argmax else {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter needs no onnxscript
        try:
            torch.onnx.export(module, (probe,), str(out), input_names=["frames" if with_preprocessing else "x"],
                              output_names=["labels" if argmax else "logits"], opset_version=opset,
                              dynamic_axes={"frames" if with_preprocessing else "x": spatial,
                                            "labels" if argmax else "logits": out_axes}, dynamo=False)
        except OSError as exc:
            raise ExportError(f"cannot write {out}: {exc.strerror}") from exc
    graph = onnx.load(str(out))
    labels = preset.label_set
    meta = {
        "espnet_ros.name": preset.name,
        "espnet_ros.classes": json.dumps([{"id": i, "name": n, "color_rgb": list(c)} for i, (n, c) in
                                          enumerate(zip(labels.names, labels.colors_rgb, strict=True))]),
        "espnet_ros.void_id": str(labels.ignore_id),
        "espnet_ros.drivable_ids": json.dumps(list(labels.default_drivable)),
        "espnet_ros.preprocessing": json.dumps({"channel_order": "bgr", "mean": list(preset.preprocessing.mean_bgr),
                                                "std": list(preset.preprocessing.std_bgr),
                                                "scale": preset.preprocessing.scale}),
        "espnet_ros.input_size": f"{w}x{h}",
        "espnet_ros.with_preprocessing": "1" if with_preprocessing else "0",
        "espnet_ros.argmax": "1" if argmax else "0",
    }
    for k, v in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(graph, str(out))
    return out


def check_onnx(
    preset: WeightsPreset,
    path: str | os.PathLike[str],
    *,
    network_size: tuple[int, int] | None = None,
    image: str | os.PathLike[str] | npt.NDArray[np.uint8] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
) -> OnnxCheck:
    """Run the exported file in ONNX Runtime on ``image`` (a file, a BGR array or :func:`sample_frame`) and compare.

    The frame is brought to the network size with the weights' recipe; PyTorch runs the same network on it.
    Returns the fraction of pixels whose labels agree and the largest logit difference (0 when the graph ends in
    argmax).
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("checking the export needs onnx and onnxruntime: pip install onnx onnxruntime") from exc
    w, h = _size(preset, network_size)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    with_pre, argmax = meta.get("espnet_ros.with_preprocessing") == "1", meta.get("espnet_ros.argmax") == "1"
    if image is None:
        frame = sample_frame((w, h))
    elif isinstance(image, np.ndarray):
        frame = image
    else:
        data = np.fromfile(image, np.uint8) if Path(image).is_file() else np.zeros(0, np.uint8)
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if decoded is None:
            raise ExportError(f"cannot read the check image {image}; give a PNG or JPEG frame")
        frame = np.asarray(decoded, np.uint8)
    x = torch.from_numpy(preset.preprocessing.apply_numpy(frame, (w, h))).unsqueeze(0)
    model = build_model(preset, weights_dir)
    with torch.no_grad():
        ref = model(x)
        if preset.output_stride != 1:
            ref = F.interpolate(ref, scale_factor=float(preset.output_stride), mode="bilinear", align_corners=False)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    runner = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    if with_pre:
        small = frame if frame.shape[:2] == (h, w) else np.asarray(
            cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)
        feed = small[None]
        # the graph's input is the uint8 frame at the network size: compare with PyTorch on that same frame
        x = torch.from_numpy(preset.preprocessing.apply_numpy(small, (w, h))).unsqueeze(0)
        with torch.no_grad():
            ref = model(x)
            if preset.output_stride != 1:
                ref = F.interpolate(ref, scale_factor=float(preset.output_stride), mode="bilinear",
                                    align_corners=False)
    else:
        feed = x.numpy()
    out = runner.run(None, {runner.get_inputs()[0].name: feed})[0]
    ref_labels = ref.max(1)[1][0].numpy()
    if argmax:
        labels, diff = out[0].astype(np.int64), 0.0
    else:
        labels, diff = out[0].argmax(0), float(np.abs(out - ref.numpy()).max())
    agreement = float((labels == ref_labels).mean())
    desc = (f"(N, {h}, {w}, 3) uint8 BGR" if with_pre else f"(N, 3, {h}, {w}) float32") + (
        " → (N, H, W) uint8 labels" if argmax else " → logits")
    return OnnxCheck(agreement=agreement, max_abs_diff=diff, input_desc=desc)
