"""Model files: trained ESPNet weights with their manifest, verified and loaded like the registry presets.

A model file is one folder (what ``espnet-ros train --out DIR`` writes as ``DIR/best``) holding

* ``weights.pth`` — the bare state dict (CPU tensors), loaded with ``weights_only=True``;
* ``manifest.json`` — format ``espnet_ros/model/v1``: name, architecture (``espnet`` / ``espnet_c``, p, q, decoder
  variant), the classes (the class file: id, name, colour, drivable, void; ignore label), preprocessing (BGR mean /
  std, scale), native input size, the weights' file name, size, sha256 and parameter count, and provenance (dataset
  fingerprints, recipe, epochs, validation mIoU, date, initial model), sealed by ``manifest_sha256``, the sha256 of
  the canonical JSON of every other key.

:func:`load_model` turns a folder into a :class:`~espnet_ros.core.weights.WeightsPreset` after checking the seal and
the weights' sha256, so every consumer of presets (segmenter, node, eval, bench, export) takes a model file as it
takes a preset, and :func:`~espnet_ros.core.weights.build_model` checks the sha256 again on every load. An edited
manifest, modified weights or a folder that is not a model file are refused with a :class:`WeightsError` that names
the fix. :func:`resolve_preset` is the one place that chooses between ``--preset`` and ``--model``. No ROS.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from espnet_ros.core.classes import ClassFile, LabelFileError
from espnet_ros.core.errors import WeightsError
from espnet_ros.core.weights import DEFAULT_PRESET, DataFile, Preprocessing, WeightsPreset, get_preset

__all__ = [
    "MANIFEST_FILE",
    "MODELS_DIR_ENV",
    "MODEL_FORMAT",
    "WEIGHTS_FILE",
    "ModelManifest",
    "find_models",
    "load_manifest",
    "load_model",
    "models_dir",
    "resolve_preset",
    "save_model",
]

MODEL_FORMAT = "espnet_ros/model/v1"
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.pth"
MODELS_DIR_ENV = "ESPNET_ROS_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("~/.cache/espnet_ros/models")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ARCHITECTURES = ("espnet", "espnet_c")


@dataclass(frozen=True)
class ModelManifest:
    """The manifest of a model file (see the module docstring).

    Attributes:
        name: the model's name (letters, digits, ``-_.``), shown where a preset name is shown.
        architecture: ``espnet`` or ``espnet_c``.
        p, q: ESP modules at levels 2 and 3.
        decoder_variant: ``cityscapes`` or ``camvid`` for ESPNet, ``None`` for ESPNet-C.
        classes: the classes (ids, names, colours, drivable, void) and the ignore label.
        preprocessing: the input constants (BGR).
        input_size: native network input ``(width, height)``.
        weights_file, weights_sha256, weights_size: the weights file in the folder and its full sha256 and size.
        num_params: parameter count.
        provenance: dataset fingerprints, recipe, epochs, validation mIoU, date, initial model (free-form JSON).
        decoder_width: channels of the ESPNet decoder's layers; ``None`` (JSON null) is the class count, as
            upstream; a fine-tuned model keeps its initial model's (:mod:`espnet_ros.core.transfer`).
    """

    name: str
    architecture: str
    p: int
    q: int
    decoder_variant: str | None
    classes: ClassFile
    preprocessing: Preprocessing
    input_size: tuple[int, int]
    weights_sha256: str
    weights_size: int
    num_params: int
    weights_file: str = WEIGHTS_FILE
    provenance: Mapping[str, Any] = field(default_factory=dict)
    decoder_width: int | None = None

    def body(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, without the seal."""
        return {
            "format": MODEL_FORMAT,
            "name": self.name,
            "architecture": {"type": self.architecture, "p": self.p, "q": self.q,
                             "decoder_variant": self.decoder_variant, "decoder_width": self.decoder_width},
            "classes": self.classes.to_dict(),
            "preprocessing": {"channel_order": "bgr", "mean": list(self.preprocessing.mean_bgr),
                              "std": list(self.preprocessing.std_bgr), "scale": self.preprocessing.scale},
            "input_size": list(self.input_size),
            "weights": {"file": self.weights_file, "sha256": self.weights_sha256, "size": self.weights_size,
                        "num_params": self.num_params},
            "provenance": _plain(self.provenance),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _seal(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _restore_fix(folder: Path) -> str:
    return (f"restore the model folder {folder} from the training output (`espnet-ros train --out DIR` writes "
            "DIR/best), or train it again")


def models_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The models folder: ``explicit``, else ``$ESPNET_ROS_MODELS_DIR``, else ``~/.cache/espnet_ros/models``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(MODELS_DIR_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_MODELS_DIR.expanduser()


def save_model(folder: str | os.PathLike[str], model: nn.Module, manifest: ModelManifest) -> ModelManifest:
    """Write ``model``'s state dict and ``manifest`` (weights hash, size and parameter count filled in) to ``folder``.

    Files are written under temporary names and renamed into place. Returns the manifest as written.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    torch.save(state, tmp)
    data = tmp.read_bytes()
    written = ModelManifest(
        **{**manifest.__dict__, "weights_sha256": hashlib.sha256(data).hexdigest(), "weights_size": len(data),
           "num_params": sum(int(t.numel()) for k, t in model.named_parameters()), "weights_file": WEIGHTS_FILE},
    )
    body = written.body()
    doc = {**body, "manifest_sha256": _seal(body)}
    os.replace(tmp, out / WEIGHTS_FILE)
    tmp_manifest = out / f".{MANIFEST_FILE}.tmp"
    tmp_manifest.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_manifest, out / MANIFEST_FILE)
    return written


def _folder_of(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if p.is_file() and p.name == MANIFEST_FILE:
        return p.parent
    if p.is_dir():
        return p
    if not p.exists():
        raise WeightsError(f"model {p} does not exist; give --model / model:= the folder that `espnet-ros train "
                           "--out DIR` writes (DIR/best), or list the models with `espnet-ros presets`")
    raise WeightsError(
        f"{p} is not a model file: a model is a folder with {MANIFEST_FILE} and {WEIGHTS_FILE} written by "
        "`espnet-ros train`; for the upstream weights use --preset NAME (and --weights-file for another location)"
    )


def load_manifest(path: str | os.PathLike[str]) -> tuple[ModelManifest, Path]:
    """Read and verify the manifest of the model folder ``path`` (or of its ``manifest.json``).

    Returns the manifest and the folder. Raises :class:`WeightsError` when the folder is not a model file, the
    manifest is unreadable, of another format, incomplete, or was edited after it was written (seal mismatch).
    """
    folder = _folder_of(path)
    mpath = folder / MANIFEST_FILE
    if not mpath.is_file():
        raise WeightsError(
            f"{folder} is not a model file: it has no {MANIFEST_FILE}; give the folder that `espnet-ros train "
            f"--out DIR` writes (DIR/best), or for the upstream weights use --preset NAME"
        )
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read model manifest {mpath} ({exc}); {_restore_fix(folder)}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise WeightsError(
            f"{mpath} is not an espnet_ros model manifest (format {found!r}, expected {MODEL_FORMAT!r}); give a "
            "folder written by `espnet-ros train`, or upgrade espnet_ros if a newer version wrote it"
        )
    seal = doc.pop("manifest_sha256", None)
    try:
        actual = _seal(doc)
    except ValueError as exc:
        raise WeightsError(f"model manifest {mpath} holds values JSON cannot seal ({exc}); {_restore_fix(folder)}"
                           ) from exc
    if seal != actual:
        raise WeightsError(
            f"model manifest {mpath} was modified after it was written (manifest_sha256 does not match its "
            f"contents); {_restore_fix(folder)}; the drivable classes are set with the node parameter "
            "drivable_classes (or --drivable-classes), not by editing the manifest"
        )
    try:
        arch, prep, weights = doc["architecture"], doc["preprocessing"], doc["weights"]
        name = str(doc["name"])
        manifest = ModelManifest(
            name=name,
            architecture=str(arch["type"]),
            p=int(arch["p"]),
            q=int(arch["q"]),
            decoder_variant=None if arch.get("decoder_variant") is None else str(arch["decoder_variant"]),
            classes=ClassFile.from_dict(doc["classes"], f"{mpath} (classes)"),
            preprocessing=Preprocessing(
                mean_bgr=tuple(float(v) for v in prep["mean"]),  # type: ignore[arg-type]
                std_bgr=tuple(float(v) for v in prep["std"]),  # type: ignore[arg-type]
                scale=float(prep.get("scale", 255.0)),
            ),
            input_size=(int(doc["input_size"][0]), int(doc["input_size"][1])),
            weights_file=str(weights["file"]),
            weights_sha256=str(weights["sha256"]),
            weights_size=int(weights["size"]),
            num_params=int(weights["num_params"]),
            provenance=MappingProxyType(dict(doc.get("provenance") or {})),
            decoder_width=None if arch.get("decoder_width") is None else int(arch["decoder_width"]),
        )
    except (KeyError, TypeError, ValueError, IndexError, LabelFileError) as exc:
        raise WeightsError(f"model manifest {mpath} is incomplete or malformed ({exc}); {_restore_fix(folder)}"
                           ) from exc
    problems = []
    if not _NAME_RE.match(manifest.name):
        problems.append(f"name {manifest.name!r}")
    if manifest.architecture not in _ARCHITECTURES:
        problems.append(f"architecture {manifest.architecture!r}")
    if manifest.architecture == "espnet" and manifest.decoder_variant not in ("cityscapes", "camvid"):
        problems.append(f"decoder_variant {manifest.decoder_variant!r}")
    if manifest.decoder_width is not None and (manifest.architecture != "espnet" or manifest.decoder_width < 5):
        problems.append(f"decoder_width {manifest.decoder_width!r} (an ESPNet's, at least 5)")
    if len(manifest.preprocessing.mean_bgr) != 3 or len(manifest.preprocessing.std_bgr) != 3:
        problems.append("preprocessing mean / std (3 values each)")
    if any(s <= 0 or s % 8 for s in manifest.input_size):
        problems.append(f"input_size {list(manifest.input_size)} (positive multiples of 8)")
    if Path(manifest.weights_file).name != manifest.weights_file:
        problems.append(f"weights file {manifest.weights_file!r} (a file name inside the folder)")
    if problems:
        raise WeightsError(f"model manifest {mpath} has unusable {', '.join(problems)}; {_restore_fix(folder)}")
    return manifest, folder


def load_model(path: str | os.PathLike[str]) -> WeightsPreset:
    """Verify the model folder ``path`` (manifest seal and weights sha256) and return it as a preset record.

    The returned :class:`WeightsPreset` carries the manifest's architecture, label set, preprocessing and input size;
    its ``data.file`` is the weights' absolute path, so :func:`~espnet_ros.core.weights.build_model` finds, checks
    (sha256, again) and loads it with ``weights_only=True`` like any preset.
    """
    from espnet_ros.core.weights import check_file

    manifest, folder = load_manifest(path)
    weights = (folder / manifest.weights_file).resolve()
    preset = WeightsPreset(
        name=manifest.name,
        data=DataFile(file=str(weights), sha256=manifest.weights_sha256, size=manifest.weights_size,
                      upstream_path=""),
        architecture="espnet_c" if manifest.architecture == "espnet_c" else "espnet",
        p=manifest.p,
        q=manifest.q,
        decoder_variant=(None if manifest.architecture == "espnet_c"
                         else "camvid" if manifest.decoder_variant == "camvid" else "cityscapes"),
        label_set=manifest.classes.label_set(),
        preprocessing=manifest.preprocessing,
        input_size=manifest.input_size,
        num_params=manifest.num_params,
        description=(f"{'ESPNet-C' if manifest.architecture == 'espnet_c' else 'ESPNet'} p={manifest.p} "
                     f"q={manifest.q}, trained on {manifest.classes.name} ({manifest.classes.num_classes} classes)"),
        metrics=MappingProxyType({k: float(v) for k, v in manifest.provenance.items()
                                  if k == "val_miou" and isinstance(v, int | float)}),
        license="trained with espnet-ros train (see the manifest's provenance)",
        fix=_restore_fix(folder),
        decoder_width=manifest.decoder_width,
    )
    check_file(preset, weights)
    return preset


def resolve_preset(preset: str | None, model: str | os.PathLike[str] | None) -> WeightsPreset:
    """The preset record for ``--preset`` / ``--model`` (parameters ``preset`` / ``model``).

    A non-empty ``model`` wins: it is loaded with :func:`load_model`. Otherwise ``preset`` (default
    ``cityscapes``) names a registry preset.
    """
    if model is not None and str(model) != "":
        return load_model(model)
    return get_preset(preset or DEFAULT_PRESET)


def find_models(folder: str | os.PathLike[str]) -> list[tuple[Path, WeightsPreset | WeightsError]]:
    """The model folders directly inside ``folder`` (and ``folder`` itself if it is one), each loaded or its error."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    candidates = [root] if (root / MANIFEST_FILE).is_file() else []
    candidates += sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())
    candidates += sorted(p / "best" for p in root.iterdir() if (p / "best" / MANIFEST_FILE).is_file())
    found: list[tuple[Path, WeightsPreset | WeightsError]] = []
    for path in candidates:
        try:
            found.append((path, load_model(path)))
        except WeightsError as exc:
            found.append((path, exc))
    return found
