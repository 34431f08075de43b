"""Training ESPNet on labelled frames: data, the upstream recipe, fine-tuning, checkpoints and model files.

The recipe follows the upstream training code (Mehta et al., ECCV 2018; github.com/sacmehta/ESPNet ``train/``):

* two stages, ESPNet-C (the encoder) first on labels downsampled x8 (nearest), then the full ESPNet whose encoder
  starts from the first stage's best weights;
* every epoch is one pass over the training frames at each of several scales of the network size (upstream, for
  1024x512: 1536x768, 1280x720, 512x256, 768x384, then 1024x512, with batch sizes B, B, B+4, B+4, B+2); each frame is
  normalised, resized (float, bilinear; labels nearest), with probability 1/2 cropped by a random margin of up to
  100 (32) pixels and resized back, and flipped with probability 1/2;
* Adam (lr 5e-4, betas 0.9 / 0.999, eps 1e-8, weight decay 5e-4), the rate halved at each third of the budget
  (upstream: every 100 of 300 epochs);
* cross entropy weighted per class by ``1 / ln(1.10 + p_c)``, ``p_c`` the class's share of the labelled training
  pixels (counted per class; upstream's ``np.histogram`` binned each label map by its own value range).

Upstream's flip is ``cv2.flip(image, 0)``, upside down; street scenes are never upside down but are mirrored, so the
default here is the horizontal flip and ``vertical`` reproduces upstream. :data:`RECIPES` holds ``upstream`` and the
short ``quick`` fine-tuning recipe. Fine-tuning (``init``) starts from a preset or model file and keeps every tensor
that fits: the encoder as is, and the class-dependent rows of the decoder and classifiers taken from the classes
named by the class file's ``init_from`` (:mod:`espnet_ros.core.transfer`). Validation reuses
:func:`~espnet_ros.core.evaluate.evaluate_split` on the model file written for the epoch (standard protocol).
Every epoch writes ``checkpoint.pt`` (resumable), ``last/`` and, when the validation mIoU improves, ``best/``.
On CUDA the forward and backward passes run in mixed precision. No ROS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from espnet_ros.core.classes import LABEL_SUFFIXES, ClassFile, read_label_map
from espnet_ros.core.errors import TrainError
from espnet_ros.core.evaluate import ConfusionMatrix, EvalError, find_pairs
from espnet_ros.core.fpmode import denormals_flushed
from espnet_ros.core.model import ESPNet, ESPNetC, decoder_variant_of
from espnet_ros.core.modelfile import ModelManifest, load_model, resolve_preset, save_model
from espnet_ros.core.recipes import RECIPES, Flip, Recipe, ScalePass, Stage
from espnet_ros.core.transfer import adapt_state, class_mapping
from espnet_ros.core.weights import Preprocessing, WeightsPreset, build_model

__all__ = [
    "RECIPES",
    "TRAIN_IMAGE_MEMORY",
    "Recipe",
    "Sample",
    "ScalePass",
    "TrainConfig",
    "TrainError",
    "TrainObserver",
    "TrainResult",
    "adapt_state",
    "augment",
    "class_mapping",
    "class_weights",
    "find_training_pairs",
    "load_split",
    "segmentation_loss",
    "train",
]

_log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "espnet_ros/checkpoint/v1"

TRAIN_IMAGE_MEMORY = 1 << 30
"""Bytes of decoded training images kept in memory between epochs (1 GiB: CamVid's 367 frames take 190 MB); the
images beyond it are decoded from their files for every batch that uses them."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (the command line's options, validated by :func:`train`).

    ``epochs`` is per stage (default: the recipe's); ``max_minutes`` bounds the whole run (with two stages the encoder
    gets half). ``void`` is ``learn`` (upstream: the void class is trained like the others) or ``ignore`` (void
    pixels are left out of the loss). ``network_size`` is the native input ``(width, height)`` of the model (default:
    the training frames' size, at most 1024 wide, multiples of 8).
    """

    images: Path
    labels: Path
    classes: ClassFile
    out: Path
    val_images: Path | None = None
    val_labels: Path | None = None
    init: str | None = None
    recipe: Recipe = field(default_factory=lambda: RECIPES["upstream"])
    epochs: int | None = None
    max_minutes: float | None = None
    batch_size: int | None = None
    network_size: tuple[int, int] | None = None
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    void: Literal["learn", "ignore"] = "learn"
    num_threads: int | None = None
    name: str | None = None
    weights_dir: Path | None = None
    """Folder of the preset weights for ``init`` (default: ``$ESPNET_ROS_WEIGHTS_DIR`` or the user cache)."""
    max_batches: int | None = None
    """Stop each epoch after this many batches (tests and smoke runs)."""


@dataclass
class Sample:
    """One training or validation frame: its files and its label map ``(H, W) uint8`` class ids."""

    name: str
    image_path: Path
    label_path: Path
    labels: npt.NDArray[np.uint8]
    image: npt.NDArray[np.uint8] | None = None
    """The decoded image (read-only) when :func:`load_split` kept it, else ``None`` (read from disk when used)."""

    def read_image(self) -> npt.NDArray[np.uint8]:
        """The ``(H, W, 3) uint8 BGR`` image: the one kept in memory, or decoded from its file."""
        return self.image if self.image is not None else _read_image(self.image_path)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the best model folder, its validation mIoU (NaN without validation), the epoch table."""

    best: Path
    best_miou: float
    history: tuple[dict[str, Any], ...]
    stopped_by: str


class TrainObserver(Protocol):
    """Progress hooks (the command line draws a progress bar and prints the table)."""

    def epoch_start(self, stage: str, epoch: int, batches: int) -> None:
        """An epoch of ``batches`` batches begins."""

    def batch_end(self, loss: float, logits: Tensor, target: Tensor) -> None:
        """A batch finished with this loss; ``logits`` and ``target`` are the batch's (detached, for inspection)."""

    def epoch_end(self, row: dict[str, Any]) -> None:
        """An epoch finished (``row``: stage, epoch, lr, loss, val_miou, best_miou, minutes, seconds)."""


class _Quiet:
    def epoch_start(self, stage: str, epoch: int, batches: int) -> None:
        pass

    def batch_end(self, loss: float, logits: Tensor, target: Tensor) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        _log.info("epoch %s", row)


# ------------------------------------------------------------------------------------------------------- data
def find_training_pairs(images: Path, labels: Path) -> list[tuple[Path, Path]]:
    """Match images to label maps (``.png`` or labelme ``.json``) by file stem; every file must have a partner."""
    try:
        return find_pairs(images, labels, LABEL_SUFFIXES)
    except EvalError as exc:
        raise TrainError(str(exc)) from None


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise TrainError(f"cannot read image {path}: not a readable image file; re-save it as PNG or JPEG, or "
                         "remove it together with its label map")
    return np.asarray(img, np.uint8)


def load_split(
    images: Path, labels: Path, classes: ClassFile, keep_images_bytes: int = 0
) -> tuple[list[Sample], str, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Read and check a split: every image readable, every label map valid and of its image's size.

    Returns the samples (label maps kept in memory; decoded images too, in file order, while they add up to at most
    ``keep_images_bytes``, the others are read again when used), the split's fingerprint (sha256 over file names
    and contents), and the mean of the per-image BGR means and standard deviations (upstream's normalisation
    constants for training from scratch).
    """
    digest = hashlib.sha256()
    samples: list[Sample] = []
    means, stds = [], []
    for image_path, label_path in find_training_pairs(images, labels):
        raw = image_path.read_bytes()
        img = _read_image(image_path)
        lab = read_label_map(label_path, classes, (img.shape[1], img.shape[0]))
        digest.update(image_path.name.encode() + b"\0" + hashlib.sha256(raw).digest())
        digest.update(label_path.name.encode() + b"\0" + hashlib.sha256(lab.tobytes()).digest())
        means.append(img.reshape(-1, 3).mean(0))
        stds.append(img.reshape(-1, 3).std(0))
        kept = None
        if img.nbytes <= keep_images_bytes:
            keep_images_bytes -= img.nbytes
            kept = img
            kept.flags.writeable = False
        samples.append(Sample(image_path.stem, image_path, label_path, lab, kept))
    return samples, digest.hexdigest(), np.mean(means, 0), np.mean(stds, 0)


def class_weights(
    labels: Sequence[npt.NDArray[np.uint8]], num_classes: int, *, norm: float = 1.10,
    exclude: Sequence[int] = (),
) -> npt.NDArray[np.float32]:
    """Per-class loss weights ``1 / ln(norm + p_c)`` with ``p_c`` the class's share of the counted pixels.

    Pixels with values ``>= num_classes`` (the ignore label) and classes in ``exclude`` are not counted.
    """
    hist = np.zeros(num_classes, np.float64)
    for lab in labels:
        hist += np.bincount(lab.reshape(-1), minlength=256)[:num_classes]
    for c in exclude:
        hist[c] = 0.0
    total = hist.sum()
    if total <= 0:
        raise TrainError("the training label maps hold no labelled pixels; label some pixels with class ids")
    return (1.0 / np.log(norm + hist / total)).astype(np.float32)


def segmentation_loss(logits: Tensor, target: Tensor, weight: Tensor, ignore_index: int) -> Tensor:
    """Class-weighted cross entropy (upstream: ``NLLLoss2d(weight)`` of ``log_softmax``): the weighted mean."""
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


def _even8(v: float) -> int:
    return max(8, round(v / 8.0) * 8)


def augment(
    image: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], size: tuple[int, int], crop_margin: int,
    flip: Flip, rng: np.random.Generator, preprocessing: Preprocessing, label_stride: int = 1,
    crop_size: tuple[int, int] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """One training sample: resize to ``size``, random crop-resize, random flip, normalise; labels alike.

    Returns the network input ``(3, h, w) float32`` and the labels ``(h / label_stride, w / label_stride) uint8``
    (with ``crop_size``, a random window of that ``(width, height)`` instead of the whole frame). The image is
    resized as float (bilinear) and the labels nearest, as in the upstream transforms.
    """
    w, h = size
    img = cv2.resize(image.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    if crop_margin > 0 and rng.random() < 0.5:
        x1 = int(rng.integers(0, crop_margin + 1))
        y1 = int(rng.integers(0, crop_margin + 1))
        if 2 * x1 < w - 8 and 2 * y1 < h - 8:
            img = cv2.resize(img[y1:h - y1, x1:w - x1], (w, h), interpolation=cv2.INTER_LINEAR)
            lab = cv2.resize(lab[y1:h - y1, x1:w - x1], (w, h), interpolation=cv2.INTER_NEAREST)
    if flip != "none" and rng.random() < 0.5:
        code = 1 if flip == "horizontal" else 0
        img = cv2.flip(img, code)
        lab = cv2.flip(lab, code)
    if crop_size is not None:
        cw, ch = min(crop_size[0], w), min(crop_size[1], h)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img, lab = img[y0:y0 + ch, x0:x0 + cw], lab[y0:y0 + ch, x0:x0 + cw]
        w, h = cw, ch
    if label_stride != 1:
        lab = cv2.resize(lab, (w // label_stride, h // label_stride), interpolation=cv2.INTER_NEAREST)
    gain, offset = preprocessing.affine()
    x = img * gain + offset
    return np.ascontiguousarray(x.transpose(2, 0, 1), np.float32), np.ascontiguousarray(lab)


# ------------------------------------------------------------------------------------------------------- training
def _build(stage: Stage, classes: int, p: int, q: int, variant: str, width: int | None) -> nn.Module:
    if stage == "encoder":
        return ESPNetC(classes, p, q)
    return ESPNet(classes, p, q, "cityscapes" if variant == "cityscapes" else "camvid", width)


def _default_size(samples: Sequence[Sample]) -> tuple[int, int]:
    h, w = samples[0].read_image().shape[:2]
    scale = min(1.0, 1024.0 / w)
    return _even8(w * scale), _even8(h * scale)


def _config_key(cfg: TrainConfig, train_fp: str) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {"classes": cfg.classes.to_dict(), "train": train_fp, "recipe": cfg.recipe.name, "init": cfg.init,
            "void": cfg.void, "seed": cfg.seed, "flip": cfg.recipe.flip, "lr": cfg.recipe.lr}


def _device(name: str) -> torch.device:
    from espnet_ros.core.segmenter import resolve_device

    return resolve_device(name)


def _evaluate(folder: Path, val: Sequence[Sample], device: torch.device, num_threads: int | None) -> float:
    """Standard-protocol mIoU of the model file ``folder`` on ``val`` through the project's evaluator."""
    from espnet_ros.core.evaluate import evaluate_split
    from espnet_ros.core.segmenter import Segmenter

    labels = {s.label_path: s.labels for s in val}
    seg = Segmenter(load_model(folder), device=str(device), output_size="network", num_threads=num_threads,
                    backend="fused" if device.type == "cpu" else "auto", half=False)
    cm: ConfusionMatrix = evaluate_split(seg, [(s.image_path, s.label_path) for s in val],
                                         read_labels=lambda p: labels[p])
    return float(cm.result(seg.labels, "standard").miou)


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train(cfg: TrainConfig, observer: TrainObserver | None = None) -> TrainResult:
    """Run ``cfg`` to its epoch or time budget; write checkpoints and model files under ``cfg.out``.

    Raises:
        TrainError, LabelFileError, WeightsError: unusable inputs or options, naming the file or option and the fix.
    """
    obs: TrainObserver = observer or _Quiet()
    recipe = cfg.recipe
    if cfg.epochs is not None and cfg.epochs < 1:
        raise TrainError(f"--epochs {cfg.epochs}: give at least 1")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise TrainError(f"--max-minutes {cfg.max_minutes}: give a positive number of minutes")
    if (cfg.val_images is None) != (cfg.val_labels is None):
        raise TrainError("give both --val-images and --val-labels, or neither")
    device = _device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    classes = cfg.classes
    samples, train_fp, mean, std = load_split(cfg.images, cfg.labels, classes, TRAIN_IMAGE_MEMORY)
    val: list[Sample] = []
    val_fp = None
    if cfg.val_images is not None and cfg.val_labels is not None:
        val, val_fp, _, _ = load_split(cfg.val_images, cfg.val_labels, classes)
    k = classes.num_classes
    exclude = [classes.void_id] if cfg.void == "ignore" else []
    weights_np = class_weights([s.labels for s in samples], k, norm=recipe.weight_norm, exclude=exclude)
    present = np.zeros(k, bool)
    for s in samples:
        present |= np.bincount(s.labels.reshape(-1), minlength=256)[:k] > 0
    absent = [classes.classes[i].name for i in range(k) if not present[i] and i not in exclude]
    if absent:
        _log.warning("classes never labelled in %s: %s (the model cannot learn them)", cfg.labels, ", ".join(absent))

    init: WeightsPreset | None = None
    init_state: dict[str, Tensor] | None = None
    mapping: list[list[int]] = [[] for _ in range(k)]
    if cfg.init:
        is_folder = Path(cfg.init).expanduser().is_dir()
        init = resolve_preset(None if is_folder else cfg.init, cfg.init if is_folder else None)
        init_state = build_model(init, cfg.weights_dir).state_dict()
        mapping = class_mapping(classes, init.label_set)
    p, q = (init.p, init.q) if init is not None else (2, 8)
    width: int | None = None
    if init is not None and init.architecture == "espnet" and init_state is not None:
        variant = decoder_variant_of(init_state)
        # the decoder keeps the initial model's width: all of it carries over, only the last layer is new
        init_width = int(init_state["classifier.weight"].shape[0])
        width = None if init_width == k else init_width
    else:
        variant = "camvid"  # the decoder of upstream's train/Model.py
    preprocessing = (init.preprocessing if init is not None else
                     Preprocessing(mean_bgr=tuple(float(v) for v in mean),  # type: ignore[arg-type]
                                   std_bgr=tuple(float(v) for v in std)))  # type: ignore[arg-type]
    size = cfg.network_size or _default_size(samples)
    if any(s <= 0 or s % 8 for s in size):
        raise TrainError(f"--size {size[0]}x{size[1]}: width and height must be positive multiples of 8")
    batch = cfg.batch_size or (recipe.batch_cuda if device.type == "cuda" else recipe.batch_cpu)
    if batch < 1:
        raise TrainError(f"--batch-size {batch}: give at least 1")
    epochs = cfg.epochs or (recipe.epochs if cfg.max_minutes is None else 10**6)
    name = cfg.name or f"{classes.name}-espnet-p{p}q{q}"
    cfg.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.out / "checkpoint.pt"
    key = _config_key(cfg, train_fp)
    history: list[dict[str, Any]] = []
    stage_index, start_epoch, elapsed_before = 0, 0, 0.0
    resume_state: dict[str, Any] | None = None
    if cfg.resume:
        if not ckpt_path.is_file():
            raise TrainError(f"--resume: {ckpt_path} does not exist; run without --resume to start training")
        resume_state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if not isinstance(resume_state, dict) or resume_state.get("format") != CHECKPOINT_FORMAT:
            raise TrainError(f"--resume: {ckpt_path} is not an espnet_ros training checkpoint")
        if json.loads(resume_state["key"]) != json.loads(json.dumps(key)):
            raise TrainError(f"--resume: {ckpt_path} was written by a run with other classes, data, recipe, --lr, "
                             "init, seed or --void; resume with the same options, or give another --out")
        stage_index, start_epoch = int(resume_state["stage"]), int(resume_state["epoch"])
        elapsed_before = float(resume_state["elapsed"])
        history = list(json.loads(resume_state["history"]))
    elif ckpt_path.exists():
        raise TrainError(f"{cfg.out} already holds a training run ({ckpt_path}); add --resume to continue it, or "
                         "give another --out")
    weight_t = torch.from_numpy(weights_np).to(device)
    ignore_index = classes.ignore_label
    amp = device.type == "cuda"
    budget_s = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    stages = recipe.stages
    provenance_base = {
        "dataset": {"train": str(cfg.images), "train_fingerprint": train_fp, "train_frames": len(samples),
                    "val": None if cfg.val_images is None else str(cfg.val_images), "val_fingerprint": val_fp,
                    "val_frames": len(val)},
        "recipe": {"name": recipe.name, "stages": list(stages), "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                   "flip": recipe.flip, "freeze": list(recipe.freeze), "batch_size": batch, "void": cfg.void,
                   "seed": cfg.seed,
                   "class_weights": [round(float(v), 6) for v in weights_np], "device": str(device),
                   "mixed_precision": amp, "passes": [asdict(s) for s in recipe.passes]},
        "init": cfg.init,
    }
    stopped_by = "epochs"
    best_dir = cfg.out / "best"
    best_miou = math.nan
    encoder_best: dict[str, Tensor] | None = None

    started = time.monotonic()  # the budget counts training and validation, not reading the data

    def clock() -> float:
        return elapsed_before + (time.monotonic() - started)

    for si in range(stage_index, len(stages)):
        stage = stages[si]
        final = si == len(stages) - 1
        stage_out = cfg.out if final else cfg.out / stage
        torch.manual_seed(cfg.seed)
        model = _build(stage, k, p, q, variant, width)
        if stage == "decoder" and encoder_best is not None:
            if width is not None and init_state is not None and init is not None:
                # the wide decoder from the initial model, the encoder (but its classifier) from the encoder stage
                state, counts = adapt_state(init_state, model, mapping, init.label_set.num_classes)
                trained = {f"encoder.{key}": t for key, t in encoder_best.items() if not key.startswith("classifier.")}
                state.update({key: t.clone() for key, t in trained.items() if key in state})
            else:
                state, counts = adapt_state(encoder_best, model, [[i] for i in range(k)], k)
            model.load_state_dict(state)
            _log.info("stage %s initialised from the encoder stage: %s", stage, counts)
        elif init_state is not None and init is not None:
            state, counts = adapt_state(init_state, model, mapping, init.label_set.num_classes)
            model.load_state_dict(state)
            _log.info("stage %s initialised from %s: %s", stage, cfg.init, counts)
        model.to(device)
        encoder = model.encoder if isinstance(model, ESPNet) else model
        frozen = [getattr(encoder, n) for n in recipe.freeze]
        for mod in frozen:
            mod.requires_grad_(False)
        opt = torch.optim.Adam([t for t in model.parameters() if t.requires_grad], recipe.lr, betas=(0.9, 0.999),
                               eps=1e-8, weight_decay=recipe.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        stage_best = math.nan
        first_epoch = 0
        stopped_by = "epochs"
        stage_started = clock()
        if resume_state is not None and si == stage_index:
            model.load_state_dict(resume_state["model"])
            opt.load_state_dict(resume_state["optimizer"])
            if amp and "scaler" in resume_state:
                scaler.load_state_dict(resume_state["scaler"])
            first_epoch = start_epoch
            stage_best = float(resume_state["stage_best"])
            stage_started = float(resume_state["stage_started"])
        # with two stages and a time budget, the encoder stage ends at half of it
        deadline = None if budget_s is None else (budget_s / 2 if len(stages) == 2 and si == 0 else budget_s)
        time_up = False
        for epoch in range(first_epoch, epochs):
            if deadline is not None and clock() >= deadline and epoch > first_epoch:
                stopped_by = "time"
                break
            progress = epoch / epochs
            if deadline is not None:
                progress = max(progress, (clock() - stage_started) / max(deadline - stage_started, 1e-9))
            lr = recipe.lr * recipe.lr_gamma ** math.floor(recipe.lr_steps * min(progress, 0.999999))
            for g in opt.param_groups:
                g["lr"] = lr
            model.train()
            for mod in frozen:
                mod.eval()
            rng = np.random.default_rng([cfg.seed, si, epoch])
            torch.manual_seed(cfg.seed * 100003 + si * 1009 + epoch)
            plan = []
            for sp in recipe.passes:
                stage_batch = (recipe.encoder_batch_cuda if stage == "encoder" and device.type == "cuda"
                               and cfg.batch_size is None else batch)
                bs = max(1, stage_batch + sp.batch_delta)
                order = rng.permutation(len(samples))
                for i in range(0, len(order), bs):
                    f = float(rng.choice(sp.random_scales)) if sp.random_scales else 1.0
                    pw = _even8(size[0] * sp.width_factor * f)
                    ph = _even8(size[1] * sp.height_factor * f)
                    plan.append((pw, ph, round(sp.crop_margin * pw), sp.crop_size, order[i:i + bs]))
            if cfg.max_batches is not None:
                plan = plan[:cfg.max_batches]
            obs.epoch_start(stage, epoch + 1, len(plan))
            t0 = time.monotonic()
            losses = []
            for pw, ph, margin, crop, idx in plan:
                xs, ys = [], []
                for i in idx:
                    s = samples[int(i)]
                    x, y = augment(s.read_image(), s.labels, (pw, ph), margin, recipe.flip, rng,
                                   preprocessing, 8 if stage == "encoder" else 1, crop)
                    xs.append(x)
                    ys.append(y)
                xb = torch.from_numpy(np.stack(xs)).to(device, non_blocking=True)
                yb = torch.from_numpy(np.stack(ys)).to(device, non_blocking=True).long()
                if exclude:
                    yb[yb == classes.void_id] = ignore_index
                with denormals_flushed(device.type == "cpu"):
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        out = model(xb)
                    loss = segmentation_loss(out, yb, weight_t, ignore_index)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                losses.append(float(loss.detach()))
                obs.batch_end(losses[-1], out.detach(), yb)
                if deadline is not None and clock() >= deadline:
                    time_up = True
                    break
            epoch_s = time.monotonic() - t0
            model.eval()
            manifest = ModelManifest(
                name=name if final else f"{name}-encoder",
                architecture="espnet_c" if stage == "encoder" else "espnet", p=p, q=q,
                decoder_variant=None if stage == "encoder" else variant, classes=classes,
                decoder_width=None if stage == "encoder" else width,
                preprocessing=preprocessing, input_size=size, weights_sha256="", weights_size=0, num_params=0,
            )
            prov: dict[str, Any] = {**provenance_base, "stage": stage, "epochs": epoch + 1,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "val_miou": None}
            last_dir = stage_out / "last"
            save_model(last_dir, model, replace(manifest, provenance=prov))
            miou = math.nan
            if val:
                miou = _evaluate(last_dir, val, device, cfg.num_threads)
                prov["val_miou"] = round(miou, 4)
                save_model(last_dir, model, replace(manifest, provenance=prov))
            if not val or math.isnan(stage_best) or miou > stage_best:
                stage_best = miou
                save_model(stage_out / "best", model, replace(manifest, provenance=prov))
            row = {"stage": stage, "epoch": epoch + 1, "lr": lr, "loss": float(np.mean(losses)) if losses else math.nan,
                   "val_miou": miou, "best_miou": stage_best, "seconds": round(epoch_s, 1),
                   "minutes": round(clock() / 60.0, 2), "batches": len(losses)}
            history.append({k_: (None if isinstance(v, float) and math.isnan(v) else v) for k_, v in row.items()})
            ckpt: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT, "key": json.dumps(key), "stage": si, "epoch": epoch + 1,
                "elapsed": clock(), "stage_started": stage_started, "stage_best": stage_best,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "history": json.dumps(history),
            }
            if amp:
                ckpt["scaler"] = scaler.state_dict()
            tmp = ckpt_path.with_name(".checkpoint.pt.tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, ckpt_path)
            _write_json(cfg.out / "history.json", history)
            obs.epoch_end(row)
            if time_up:
                stopped_by = "time"
                break
        if not final:
            encoder_best = build_model(load_model(stage_out / "best")).state_dict()
        else:
            best_miou = stage_best
    return TrainResult(best=best_dir, best_miou=best_miou, history=tuple(history), stopped_by=stopped_by)
