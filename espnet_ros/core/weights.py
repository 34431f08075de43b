"""Pretrained weights as verified data: the preset registry, preprocessing constants, finding, checking, loading.

Each :class:`WeightsPreset` is a frozen record of one official upstream file: where it lives relative to the
weights directory, its full sha256 and size, the upstream URL, the architecture, the label set, the preprocessing
it was trained with, its native input size, parameter count, published metrics and licence. The hash is checked
on every load (the files are about 1 MB) and loading is ``weights_only=True`` on the CPU first. Downloading happens
only through :func:`download_files` (the ``espnet-ros download-weights`` command), never as a side effect.

The preprocessing recipe (BGR, ``(x - mean) / std``, resize as float, divide by 255 again) lives in
:class:`Preprocessing` and nowhere else.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from espnet_ros.core.errors import WeightsError
from espnet_ros.core.labels import CAMVID, CITYSCAPES, LabelSet
from espnet_ros.core.model import espnet, espnet_c

__all__ = [
    "DEFAULT_PRESET",
    "DEFAULT_URL_BASE",
    "PRESETS",
    "SAMPLES",
    "Architecture",
    "DataFile",
    "Preprocessing",
    "WeightsPreset",
    "build_model",
    "check_file",
    "download_files",
    "get_preset",
    "load_state_dict",
    "resolve_weights_file",
    "url_base",
    "weights_dir",
]

_log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "ESPNET_ROS_WEIGHTS_DIR"
URL_BASE_ENV = "ESPNET_ROS_URL_BASE"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/espnet_ros/weights")
DEFAULT_URL_BASE = "https://github.com/sacmehta/ESPNet/raw/master"
"""Upstream repository root for raw files; weights are under ``pretrained/``, sample frames under ``test/data/``."""

Architecture = Literal["espnet", "espnet_c"]
_FIX = "run `espnet-ros download-weights {preset}` (or set ESPNET_ROS_WEIGHTS_DIR to a folder holding {file})"


@dataclass(frozen=True)
class Preprocessing:
    """The input recipe the weights were trained with (constants in BGR order).

    Per channel ``y = (x - mean) / std / scale`` on a float BGR image in 0..255, resized as float to the network
    size with bilinear interpolation. Since bilinear resizing is linear with weights that sum to one, resizing the
    raw float image first and then applying the affine map gives the same values; :meth:`affine` gives that map.
    """

    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]
    scale: float = 255.0

    def affine(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Return ``(gain, offset)``, each ``(3,) float32`` in BGR order, with ``y = x * gain + offset``."""
        mean = np.asarray(self.mean_bgr, np.float64)
        std = np.asarray(self.std_bgr, np.float64)
        gain = 1.0 / (std * self.scale)
        return gain.astype(np.float32), (-mean * gain).astype(np.float32)

    def apply_numpy(self, image_bgr: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.float32]:
        """The upstream recipe step by step in numpy/OpenCV: ``(H, W, 3) uint8 BGR`` → ``(3, h, w) float32``.

        ``size`` is the network input ``(width, height)``. This is the reference the fast paths are checked
        against; it is not used on the hot path.
        """
        img = image_bgr.astype(np.float32)
        for c in range(3):
            img[:, :, c] -= self.mean_bgr[c]
            img[:, :, c] /= self.std_bgr[c]
        if (img.shape[1], img.shape[0]) != size:
            img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_LINEAR), np.float32)
        img /= self.scale
        return np.ascontiguousarray(img.transpose(2, 0, 1))


CITYSCAPES_PREPROCESSING = Preprocessing(
    mean_bgr=(72.3923111, 82.90893555, 73.15840149),
    std_bgr=(45.3192215, 46.15289307, 44.91483307),
)
CAMVID_PREPROCESSING = Preprocessing(
    mean_bgr=(110.3310546875, 108.40888977050781, 105.03321838378906),
    std_bgr=(72.12568664550781, 72.69076538085938, 69.90434265136719),
)


@dataclass(frozen=True)
class DataFile:
    """A file that can be downloaded and verified: path relative to its folder, sha256, size, upstream path."""

    file: str
    sha256: str
    size: int
    upstream_path: str

    def url(self, base: str | None = None) -> str:
        """Return the download URL under ``base`` (default: :func:`url_base`)."""
        return f"{(base or url_base()).rstrip('/')}/{self.upstream_path}"


@dataclass(frozen=True)
class WeightsPreset:
    """One pretrained model: its file and everything needed to use it correctly.

    Attributes:
        name: registry key (``cityscapes``, ``camvid`` ...).
        data: the weights file (relative path, sha256, size, upstream path).
        architecture: ``espnet`` (encoder + decoder, full-resolution output) or ``espnet_c`` (1/8 output).
        p, q: ESP modules at levels 2 and 3.
        decoder_variant: which level-1 features the decoder concatenates (``None`` for ESPNet-C).
        label_set: the classes (output channels).
        preprocessing: input constants.
        input_size: native network input ``(width, height)``.
        num_params: exact parameter count.
        metrics: published (and our measured) numbers, documented per key.
        license: licence of the weights.
        fix: what to tell the user when the file is missing or damaged (empty: ``download-weights``; model files
            of :mod:`espnet_ros.core.modelfile` say how to restore them).
        decoder_width: channels of the ESPNet decoder's layers (``None``: the class count, as upstream).
    """

    name: str
    data: DataFile
    architecture: Architecture
    p: int
    q: int
    decoder_variant: Literal["cityscapes", "camvid"] | None
    label_set: LabelSet
    preprocessing: Preprocessing
    input_size: tuple[int, int]
    num_params: int
    description: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    license: str = "MIT (github.com/sacmehta/ESPNet)"
    fix: str = ""
    decoder_width: int | None = None

    @property
    def file(self) -> str:
        """Path of the weights file relative to the weights directory."""
        return self.data.file

    @property
    def sha256(self) -> str:
        """Full sha256 of the weights file."""
        return self.data.sha256

    @property
    def url(self) -> str:
        """Upstream download URL (under the configured URL base)."""
        return self.data.url()

    @property
    def output_stride(self) -> int:
        """Ratio of network input size to logits size (1 for ESPNet, 8 for ESPNet-C)."""
        return 8 if self.architecture == "espnet_c" else 1

    def build(self) -> nn.Module:
        """Build the untrained network for this preset."""
        classes = self.label_set.num_classes
        if self.architecture == "espnet_c":
            return espnet_c(classes=classes, p=self.p, q=self.q)
        assert self.decoder_variant is not None
        return espnet(classes=classes, p=self.p, q=self.q, decoder_variant=self.decoder_variant,
                      decoder_width=self.decoder_width)


def _weights(file: str, sha256: str, size: int) -> DataFile:
    return DataFile(file=file, sha256=sha256, size=size, upstream_path=f"pretrained/{file}")


def _cityscapes(name: str, arch: Architecture, q: int, data: DataFile, params: int, **metrics: float) -> WeightsPreset:
    kind = "ESPNet" if arch == "espnet" else "ESPNet-C (encoder only)"
    return WeightsPreset(
        name=name, data=data, architecture=arch, p=2, q=q,
        decoder_variant="cityscapes" if arch == "espnet" else None,
        label_set=CITYSCAPES, preprocessing=CITYSCAPES_PREPROCESSING, input_size=(1024, 512),
        num_params=params, description=f"{kind} p=2 q={q}, Cityscapes (19 classes + void)",
        metrics=MappingProxyType(dict(metrics)),
    )


_PRESET_LIST = (
    _cityscapes(
        "cityscapes", "espnet", 8,
        _weights("decoder/espnet_p_2_q_8.pth",
                 "343b0e77e8545d36113c4f3efbf1ee349256f25c97c9f9d5ddefe45f2f49763e", 1501621),
        364569, cityscapes_test_miou=60.3, titanx_fps_1024x512=112.0, jetson_tx2_fps_1024x512=9.0,
    ),
    _cityscapes(
        "cityscapes-p2q5", "espnet", 5,
        _weights("decoder/espnet_p_2_q_5.pth",
                 "0378be45080ca5edfc416e9ba06b04e74ec5e2ec4baf56597f25a894a8593942", 1104612),
        267417,
    ),
    _cityscapes(
        "cityscapes-p2q3", "espnet", 3,
        _weights("decoder/espnet_p_2_q_3.pth",
                 "8f3eb198fb15e5da7fa8d258d5f0fc4a4213e1124f415f6fc54d2772d585a7fc", 840008),
        202649,
    ),
    _cityscapes(
        "cityscapes-c-p2q8", "espnet_c", 8,
        _weights("encoder/espnet_p_2_q_8.pth",
                 "836f28a2a31bd4fc8997001ab6b620d1f9b7b274a03b32d9f3a95c17a011b438", 1433605),
        349449,
    ),
    _cityscapes(
        "cityscapes-c-p2q5", "espnet_c", 5,
        _weights("encoder/espnet_p_2_q_5.pth",
                 "ec028eb60b08a56583eb9d310f5f4f7c4bc70972009030c25f1414dc48c916d6", 1037106),
        252297,
    ),
    _cityscapes(
        "cityscapes-c-p2q3", "espnet_c", 3,
        _weights("encoder/espnet_p_2_q_3.pth",
                 "5101e9bc90dd2a57d8460e70cdfaa743f76317bf806d2d1c4adb635c8d392e77", 772764),
        187529,
    ),
    WeightsPreset(
        name="camvid",
        data=_weights("decoder/espnet_p_2_q_8_camvid.pth",
                      "7d354a257170322086dcd4c1e89a482454cf2c9d30b085e70883878dd59301af", 1460677),
        architecture="espnet", p=2, q=8, decoder_variant="camvid", label_set=CAMVID,
        preprocessing=CAMVID_PREPROCESSING, input_size=(480, 360), num_params=354517,
        description="ESPNet p=2 q=8, CamVid (11 classes + unlabelled)",
        metrics=MappingProxyType({
            "camvid_test_miou": 55.64, "camvid_test_class_avg_acc": 68.30,
            "camvid_val_miou_upstream_protocol": 68.68, "camvid_val_miou_standard_protocol": 70.10,
        }),
    ),
)

PRESETS: Mapping[str, WeightsPreset] = MappingProxyType({p.name: p for p in _PRESET_LIST})
"""The registry: preset name → :class:`WeightsPreset`."""

DEFAULT_PRESET = "cityscapes"

SAMPLES: tuple[DataFile, ...] = (
    DataFile("frankfurt_000000_000294_leftImg8bit.png",
             "3957f8cbb5f5ca483df2c4d39ba0bd581368225d160ab013166f54596cea6ade", 2275595,
             "test/data/frankfurt_000000_000294_leftImg8bit.png"),
    DataFile("frankfurt_000000_000576_leftImg8bit.png",
             "665ed5e09a0b8708b7aa01897194b4fe7a59fc299298a4f0b06a52634edbde10", 2324344,
             "test/data/frankfurt_000000_000576_leftImg8bit.png"),
)
"""The two Cityscapes validation frames shipped with the upstream repository (for demos and tests)."""


def get_preset(preset: str | WeightsPreset) -> WeightsPreset:
    """Return the preset called ``preset`` (or ``preset`` itself); unknown names raise :class:`WeightsError`."""
    if isinstance(preset, WeightsPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise WeightsError(
            f"unknown weights preset {preset!r}; known presets: {', '.join(PRESETS)} (see `espnet-ros presets`)"
        ) from None


def weights_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The weights directory: ``explicit``, else ``$ESPNET_ROS_WEIGHTS_DIR``, else ``~/.cache/espnet_ros/weights``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_DIR_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_WEIGHTS_DIR.expanduser()


def url_base(explicit: str | None = None) -> str:
    """The download URL base: ``explicit``, else ``$ESPNET_ROS_URL_BASE``, else the upstream repository."""
    return explicit or os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE


def resolve_weights_file(
    preset: str | WeightsPreset,
    weights_dir_: str | os.PathLike[str] | None = None,
    weights_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the path of the preset's file: ``weights_file`` if given, else ``<weights dir>/<preset.file>``."""
    p = get_preset(preset)
    if weights_file is not None and str(weights_file) != "":
        return Path(weights_file).expanduser()
    return weights_dir(weights_dir_) / p.file


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_file(preset: str | WeightsPreset, path: Path) -> bytes:
    """Read ``path`` and verify it is exactly the preset's file; return its bytes or raise :class:`WeightsError`.

    The error says which of these it is: missing, unreadable, truncated, not a PyTorch file, the file of another
    preset, or modified (sha256 mismatch), and what to do about it.
    """
    p = get_preset(preset)
    fix = p.fix or _FIX.format(preset=p.name, file=p.file)
    if not path.exists():
        raise WeightsError(f"weights for preset {p.name!r} not found: {path} does not exist; {fix}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, socket or pipe)"
        raise WeightsError(f"weights file {path} for preset {p.name!r} is {kind}; point the weights setting at the "
                           f"preset's file {p.file}, or {fix}")
    # Read no more than the largest preset file or this model file (+1 byte): a wrong, huge file is refused without
    # reading it whole.
    limit = max(p.data.size, *(other.data.size for other in PRESETS.values())) + 1
    try:
        with path.open("rb") as f:
            data = f.read(limit)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}; check its permissions or {fix}") from exc
    if len(data) == limit:
        raise WeightsError(f"weights file {path} for preset {p.name!r} is larger than any preset file (expected "
                           f"{p.data.size} bytes); it is not the preset's file: point the weights setting at "
                           f"{p.file}, or {fix}")
    digest = _sha256(data)
    if digest == p.sha256:
        return data
    for other in PRESETS.values():
        if other.sha256 == digest:
            raise WeightsError(
                f"{path} holds the weights of preset {other.name!r} ({other.file}), not of {p.name!r} "
                f"({p.file}); use preset {other.name!r}, point the weights setting at the right file, or delete "
                f"it and {fix}"
            )
    if not data:
        kind = "is empty"
    elif data[:2] not in (b"\x80\x02", b"PK"):
        kind = "is not a PyTorch file (unknown header)"
    elif len(data) < p.data.size:
        kind = f"is truncated ({len(data)} of {p.data.size} bytes)"
    else:
        kind = f"has been modified or corrupted (sha256 {digest[:16]}…, expected {p.sha256[:16]}…)"
    raise WeightsError(f"weights file {path} for preset {p.name!r} {kind}; delete it and {fix}")


def load_state_dict(
    preset: str | WeightsPreset,
    weights_dir_: str | os.PathLike[str] | None = None,
    weights_file: str | os.PathLike[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Find, verify (sha256) and load the preset's state dict on the CPU with ``weights_only=True``."""
    p = get_preset(preset)
    path = resolve_weights_file(p, weights_dir_, weights_file)
    data = check_file(p, path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle; all mean the same to the user
        raise WeightsError(f"cannot load {path} as PyTorch weights ({exc}); "
                           f"{p.fix or _FIX.format(preset=p.name, file=p.file)}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def build_model(
    preset: str | WeightsPreset,
    weights_dir_: str | os.PathLike[str] | None = None,
    weights_file: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build the preset's network, load its verified weights strictly and return it in eval mode on the CPU."""
    p = get_preset(preset)
    state = load_state_dict(p, weights_dir_, weights_file)
    model = p.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights for {p.name!r} do not fit the {p.architecture} architecture: {exc}") from exc
    return model.eval()


ProgressFactory = Callable[[int, str], Callable[[int], None]]


def download_files(
    files: Iterable[DataFile],
    target_dir: Path,
    *,
    base: str | None = None,
    progress: ProgressFactory | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download ``files`` into ``target_dir`` (verifying size and sha256), skipping those already present and good.

    Each file is written to a temporary name and renamed only after its hash matched. ``progress(total, name)``
    returns a callback that receives byte counts. Raises :class:`WeightsError` on any failure.
    """
    done: list[Path] = []
    for f in files:
        dest = target_dir / f.file
        if dest.is_file() and _sha256(dest.read_bytes()) == f.sha256:
            _log.info("%s already present and verified", dest)
            done.append(dest)
            continue
        url = f.url(base)
        dest.parent.mkdir(parents=True, exist_ok=True)
        update = progress(f.size, f.file) if progress else None
        h = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while chunk := resp.read(1 << 16):
                    h.update(chunk)
                    out.write(chunk)
                    if update:
                        update(len(chunk))
            if h.hexdigest() != f.sha256:
                raise WeightsError(
                    f"downloaded {url} but its sha256 is {h.hexdigest()}, expected {f.sha256}; the upstream file "
                    "changed or the download was corrupted: try again, or fetch it by hand and check it"
                )
            os.replace(tmp_name, dest)
        except (urllib.error.URLError, OSError) as exc:
            raise WeightsError(
                f"cannot download {url}: {exc}; check the network, or set ESPNET_ROS_URL_BASE / --url-base to a "
                "mirror (a file:// URL works)"
            ) from exc
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        done.append(dest)
    return done
