"""Evaluation of segmentations against ground-truth label maps: confusion matrices and mIoU under two protocols.

A :class:`ConfusionMatrix` accumulates one ``(K, K)`` matrix (rows: ground truth, columns: prediction) over a whole
split with ``np.bincount(label * K + pred)``. :func:`compute_metrics` turns it into an :class:`EvalResult` under
either protocol: ``upstream`` (all K labels in the matrix; IoU_c = TP / (GT_c + PRED_c - TP) where PRED_c counts
predictions on unlabelled pixels too; this reproduces the published ESPNet CamVid numbers) or ``standard``
(pixels labelled with the ignore id are dropped entirely). Both average over the classes other than the ignore id.
:func:`evaluate_split` runs a :class:`~espnet_ros.core.segmenter.Segmenter` over an images / labels folder pair.
All figures are percentages. No ROS.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.labels import LabelSet

if TYPE_CHECKING:
    from espnet_ros.core.segmenter import Segmenter

__all__ = [
    "IMAGE_SUFFIXES",
    "PROTOCOLS",
    "ConfusionMatrix",
    "EvalError",
    "EvalResult",
    "Protocol",
    "check_label_size",
    "compute_metrics",
    "evaluate_split",
    "find_pairs",
    "read_label_map",
]

_log = logging.getLogger(__name__)

Protocol = Literal["upstream", "standard"]
PROTOCOLS: tuple[Protocol, ...] = ("upstream", "standard")

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
"""Suffixes of the image files that :func:`find_pairs` takes (case-insensitive)."""


class EvalError(EspnetRosError):
    """The evaluation inputs are unusable: missing or unmatched files, label maps of the wrong kind or size."""


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation, in percent.

    Attributes:
        miou: mean IoU over the evaluated classes (every class but the ignore id), skipping classes that appear
            neither in the ground truth nor in the predictions.
        pixel_acc: correctly labelled pixels / labelled pixels (pixels labelled with the ignore id excluded).
        class_avg_acc: mean over the evaluated classes of TP / GT (classes absent from the ground truth skipped).
        per_class_iou: class name → IoU (NaN for a class absent from both ground truth and predictions).
        protocol: ``upstream`` or ``standard``.
        num_images: number of label maps accumulated.
        per_class_acc: class name → TP / GT (NaN where GT is 0).
        confusion: the ``(K, K) int64`` confusion matrix (rows ground truth, columns prediction) the figures come
            from, ignore row included.
    """

    miou: float
    pixel_acc: float
    class_avg_acc: float
    per_class_iou: Mapping[str, float]
    protocol: Protocol
    num_images: int
    per_class_acc: Mapping[str, float] = field(default_factory=dict)
    confusion: npt.NDArray[np.int64] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (NaN becomes ``None``); the confusion matrix as nested lists."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 4)

        return {
            "protocol": self.protocol,
            "num_images": self.num_images,
            "miou": clean(self.miou),
            "pixel_acc": clean(self.pixel_acc),
            "class_avg_acc": clean(self.class_avg_acc),
            "per_class_iou": {k: clean(v) for k, v in self.per_class_iou.items()},
            "per_class_acc": {k: clean(v) for k, v in self.per_class_acc.items()},
            "confusion": None if self.confusion is None else self.confusion.tolist(),
        }


class ConfusionMatrix:
    """Accumulates a ``(K, K) int64`` confusion matrix; rows are ground truth, columns predictions.

    Ground-truth values outside ``0..K-1`` (such as 255) are not counted; :attr:`skipped_pixels` says how many.
    Predictions must be class ids in ``0..K-1``.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1 or num_classes > 255:
            raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix: npt.NDArray[np.int64] = np.zeros((num_classes, num_classes), np.int64)
        self.num_images = 0
        self.skipped_pixels = 0

    def update(self, labels: npt.NDArray[np.integer], predictions: npt.NDArray[np.integer]) -> None:
        """Add one pair of same-shaped ground-truth and predicted class-id maps."""
        if labels.shape != predictions.shape:
            raise EvalError(
                f"label map is {labels.shape} but the prediction is {predictions.shape}; predict at the labels' size"
            )
        k = self.num_classes
        lab = labels.reshape(-1).astype(np.int64, copy=False)
        pred = predictions.reshape(-1).astype(np.int64, copy=False)
        if pred.size and (int(pred.min()) < 0 or int(pred.max()) >= k):
            raise EvalError(f"predictions must be class ids in 0..{k - 1}, got values {pred.min()}..{pred.max()}")
        valid = (lab >= 0) & (lab < k)
        n_valid = int(np.count_nonzero(valid))
        if n_valid != lab.size:
            self.skipped_pixels += lab.size - n_valid
            lab, pred = lab[valid], pred[valid]
        self.matrix += np.bincount(lab * k + pred, minlength=k * k).reshape(k, k)
        self.num_images += 1

    def result(self, labels: LabelSet, protocol: Protocol = "upstream") -> EvalResult:
        """The metrics of the accumulated matrix for ``labels`` under ``protocol``."""
        return compute_metrics(self.matrix, labels.names, labels.ignore_id, protocol, self.num_images)


def _pct(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 100.0 * num / np.maximum(den, 1), np.nan)


def _nanmean(values: npt.NDArray[np.float64]) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def compute_metrics(
    confusion: npt.NDArray[np.integer],
    names: Sequence[str],
    ignore_id: int | None,
    protocol: Protocol = "upstream",
    num_images: int = 0,
) -> EvalResult:
    """Metrics of a ``(K, K)`` confusion matrix (rows ground truth, columns prediction).

    ``upstream``: IoU_c = TP_c / (GT_c + PRED_c - TP_c) on the full matrix, so predictions of class c on pixels
    labelled ``ignore_id`` count as false positives of c. ``standard``: the ``ignore_id`` row is dropped first.
    Both average IoU and accuracy over the classes other than ``ignore_id``; pixel accuracy is the correctly
    labelled fraction of the pixels not labelled ``ignore_id``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    cm = np.asarray(confusion, np.float64)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(names) != k:
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(names)} class names")
    if protocol == "standard" and ignore_id is not None:
        cm = cm.copy()
        cm[ignore_id, :] = 0.0
    tp = np.diag(cm)
    gt = cm.sum(1)
    pred = cm.sum(0)
    iou = _pct(tp, gt + pred - tp)
    acc = _pct(tp, gt)
    classes = [c for c in range(k) if c != ignore_id]
    labelled = gt[classes].sum()
    pixel_acc = 100.0 * tp[classes].sum() / labelled if labelled > 0 else math.nan
    return EvalResult(
        miou=_nanmean(iou[classes]),
        pixel_acc=float(pixel_acc),
        class_avg_acc=_nanmean(acc[classes]),
        per_class_iou=MappingProxyType({names[c]: float(iou[c]) for c in classes}),
        protocol=protocol,
        num_images=num_images,
        per_class_acc=MappingProxyType({names[c]: float(acc[c]) for c in classes}),
        confusion=np.asarray(confusion, np.int64).copy(),
    )


def read_label_map(path: Path) -> npt.NDArray[np.uint8]:
    """Read a single-channel ``(H, W) uint8`` label png; raise :class:`EvalError` if it is not one."""
    data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    labels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if labels is None:
        raise EvalError(f"cannot read label map {path}; expected a single-channel 8-bit png of class ids")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise EvalError(
            f"label map {path} is {labels.dtype} with shape {labels.shape}; expected a single-channel 8-bit image of "
            "class ids (not a colour-coded label image)"
        )
    return np.asarray(labels, np.uint8)


def _files_by_stem(folder: Path, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvalError(f"{what} folder {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            if p.stem in found:
                raise EvalError(f"{what} folder {folder} has two files for {p.stem!r} ({found[p.stem].name}, "
                                f"{p.name}); keep one")
            found[p.stem] = p
    if not found:
        raise EvalError(f"{what} folder {folder} holds no {what} (expected {', '.join(suffixes)} files); an empty "
                        "split cannot be used")
    return found


def find_pairs(
    images_dir: str | os.PathLike[str],
    labels_dir: str | os.PathLike[str],
    label_suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[tuple[Path, Path]]:
    """Match images to label maps by file name (stem), sorted by name: the one pairing of eval, bench and train.

    Images are files with an :data:`IMAGE_SUFFIXES` suffix; label maps have one of ``label_suffixes`` (training
    also takes labelme ``.json``). Raises :class:`EvalError` if a folder is missing or empty, holds two files of
    one stem, or if any image has no label map (or vice versa).
    """
    images = _files_by_stem(Path(images_dir), IMAGE_SUFFIXES, "images")
    labels = _files_by_stem(Path(labels_dir), label_suffixes, "labels")
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) without a label map (e.g. {missing[0]}: {images[missing[0]]})")
        if extra:
            parts.append(f"{len(extra)} label map(s) without an image (e.g. {extra[0]}: {labels[extra[0]]})")
        raise EvalError(
            f"images in {images_dir} and labels in {labels_dir} do not pair up by file name: {'; '.join(parts)}; "
            "name each label map like its image (frame_001.png <-> frame_001.png)"
        )
    return [(images[s], labels[s]) for s in sorted(images)]


def _integer_scale(small: tuple[int, int], large: tuple[int, int]) -> bool:
    """Whether ``large`` is ``small`` times one integer on both axes (``(H, W)`` pairs)."""
    return (large[0] % small[0] == 0 and large[1] % small[1] == 0
            and large[0] // small[0] == large[1] // small[1])


def check_label_size(label_path: Path, label_hw: tuple[int, ...], frame_hw: tuple[int, ...]) -> None:
    """Refuse a label map that is neither the frame's size nor an exact integer scale of it (either way).

    A label map of another aspect ratio belongs to another image (or was cropped); comparing it after a resize
    would silently score the wrong pixels. Raises :class:`EvalError` naming the file and both sizes.
    """
    lab = (int(label_hw[0]), int(label_hw[1]))
    img = (int(frame_hw[0]), int(frame_hw[1]))
    if lab == img or _integer_scale(lab, img) or _integer_scale(img, lab):
        return
    raise EvalError(
        f"label map {label_path} is {lab[1]}x{lab[0]} but its image is {img[1]}x{img[0]}; a label map must have "
        "the image's size or an exact integer scale of it (e.g. half). Check that the folders pair the right "
        "files and that neither was cropped"
    )


def evaluate_split(
    segmenter: Segmenter,
    pairs: Iterable[tuple[Path, Path]],
    *,
    on_image: Callable[[Path], None] | None = None,
    read_labels: Callable[[Path], npt.NDArray[np.uint8]] = read_label_map,
) -> ConfusionMatrix:
    """Segment every image of ``pairs`` and accumulate the confusion matrix against its label map.

    The segmenter runs at its network size; its class ids are brought to the label map's resolution (nearest,
    pixel centres aligned). ``on_image`` is called after each image (for progress bars); ``read_labels`` reads a
    label map (default: :func:`read_label_map`, class-id PNGs). Returns the matrix; call
    :meth:`ConfusionMatrix.result` for either protocol.
    """
    from espnet_ros.core.frames import FrameSource
    from espnet_ros.core.segmenter import resize_labels

    cm = ConfusionMatrix(segmenter.labels.num_classes)
    for image_path, label_path in pairs:
        frame = next(iter(FrameSource(image_path)))
        labels = read_labels(label_path)
        check_label_size(label_path, labels.shape[:2], frame.image.shape[:2])
        if int(labels.max()) >= cm.num_classes and int(labels.max()) != 255:
            raise EvalError(
                f"label map {label_path} holds class id {int(labels.max())} but preset {segmenter.preset.name!r} "
                f"has {cm.num_classes} classes (0..{cm.num_classes - 1}); are these labels of another dataset?"
            )
        result = segmenter.segment(frame.image, color_order="bgr", output_size="network")
        pred = resize_labels(result.class_ids, (labels.shape[1], labels.shape[0]))
        cm.update(labels, pred)
        if on_image is not None:
            on_image(image_path)
    if cm.num_images == 0:
        raise EvalError("no image pairs to evaluate")
    return cm
