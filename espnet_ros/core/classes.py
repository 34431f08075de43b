"""Class files and label maps for training: which classes a model learns, and reading the labels users draw.

A class file is YAML (``config/camvid_classes.yaml`` is the worked example)::

    name: camvid                # the label set's name (letters, digits, - _ .)
    ignore_label: 255           # label value that no loss or metric counts (optional, default 255)
    classes:
      - {id: 0, name: Sky, color: [128, 128, 128], init_from: sky}
      - {id: 3, name: Road, color: [128, 64, 128], drivable: true, init_from: road}
      - {id: 11, name: Unlabelled, color: [0, 0, 0], void: true, init_from: void}

Ids run 0..K-1 without gaps (they are the network's output channels); colours are RGB and distinct; exactly one class
is ``void`` (what the network predicts where it knows nothing; left out of the mIoU, like Cityscapes' void and
CamVid's Unlabelled). ``init_from`` names one class (or a list, averaged) of the model that fine-tuning starts from,
whose classifier rows initialise this class. :func:`read_label_map` reads a label map in any of the three accepted
forms — single-channel class-id PNGs, colour PNGs in the class file's palette, labelme JSON polygons — into
``(H, W) uint8`` class ids. Every error names the file and the fix. No ROS.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.labels import LabelSet

__all__ = [
    "LABEL_SUFFIXES",
    "ClassFile",
    "ClassSpec",
    "LabelFileError",
    "load_class_file",
    "read_label_map",
]

LABEL_SUFFIXES = (".png", ".json")
"""Accepted label map files: PNG (class ids or colours) and labelme JSON."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LabelFileError(EspnetRosError, ValueError):
    """A class file or a label map is unusable; the message names the file, what is wrong and the fix."""


@dataclass(frozen=True)
class ClassSpec:
    """One class of a class file.

    Attributes:
        id: the class id (network output channel).
        name: display name.
        color_rgb: ``(R, G, B)`` colour, also how colour label PNGs mark this class.
        drivable: whether the class counts as drivable by default.
        void: whether this is the void / unlabelled class.
        init_from: names (or ids) of the initial model's classes whose rows initialise this class; empty: random.
    """

    id: int
    name: str
    color_rgb: tuple[int, int, int]
    drivable: bool = False
    void: bool = False
    init_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassFile:
    """A validated class file (see the module docstring).

    Attributes:
        name: the label set's name.
        classes: one :class:`ClassSpec` per id, in id order.
        ignore_label: label value that is never trained on nor counted (outside ``0..K-1``).
        source: the file it was read from (for messages).
    """

    name: str
    classes: tuple[ClassSpec, ...]
    ignore_label: int = 255
    source: str = "<class file>"

    @property
    def num_classes(self) -> int:
        """Number of classes (network output channels), void included."""
        return len(self.classes)

    @property
    def void_id(self) -> int:
        """Id of the void class."""
        return next(c.id for c in self.classes if c.void)

    def label_set(self) -> LabelSet:
        """The :class:`LabelSet` of these classes (names, colours, void id, default drivable ids)."""
        return LabelSet(
            name=self.name,
            names=tuple(c.name for c in self.classes),
            colors_rgb=tuple(c.color_rgb for c in self.classes),
            ignore_id=self.void_id,
            default_drivable=tuple(c.id for c in self.classes if c.drivable),
        )

    def to_dict(self) -> dict[str, Any]:
        """The class file as plain data (what a model manifest records)."""
        return {
            "name": self.name,
            "ignore_label": self.ignore_label,
            "classes": [
                {"id": c.id, "name": c.name, "color": list(c.color_rgb), "drivable": c.drivable, "void": c.void,
                 **({"init_from": list(c.init_from)} if c.init_from else {})}
                for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<class file>") -> ClassFile:
        """Validate plain data (parsed YAML or a manifest's ``classes``) into a :class:`ClassFile`."""
        return _parse(doc, source)

    def color_lut(self) -> dict[int, int]:
        """Map from packed RGB ``(R << 16) | (G << 8) | B`` to class id."""
        return {(r << 16) | (g << 8) | b: c.id for c in self.classes for r, g, b in [c.color_rgb]}


def _fail(source: str, what: str) -> LabelFileError:
    return LabelFileError(f"class file {source}: {what}")


def _parse(doc: Any, source: str) -> ClassFile:
    if not isinstance(doc, Mapping):
        raise _fail(source, "expected a mapping with 'name' and 'classes' (see config/camvid_classes.yaml)")
    unknown = sorted(set(doc) - {"name", "ignore_label", "classes"})
    if unknown:
        raise _fail(source, f"unknown key(s) {', '.join(map(str, unknown))}; allowed: name, ignore_label, classes")
    name = str(doc.get("name", "")).strip()
    if not _NAME_RE.match(name):
        raise _fail(source, f"name {name!r} must be letters, digits, '-', '_' or '.', e.g. name: parking_lot")
    ignore = doc.get("ignore_label", 255)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise _fail(source, f"ignore_label {ignore!r} must be an integer in 0..255 (default 255)")
    items = doc.get("classes")
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise _fail(source, "'classes' must be a list of classes (one of them void: true)")
    specs: list[ClassSpec] = []
    for n, item in enumerate(items):
        specs.append(_parse_class(item, n, source))
    specs.sort(key=lambda c: c.id)
    ids = [c.id for c in specs]
    if ids != list(range(len(specs))):
        raise _fail(source, f"class ids must be 0..{len(specs) - 1} without gaps or repeats, got {sorted(ids)}")
    if len(specs) > 255:
        raise _fail(source, f"{len(specs)} classes; at most 255 fit in 8-bit label maps")
    if ignore < len(specs):
        raise _fail(source, f"ignore_label {ignore} is also a class id (0..{len(specs) - 1}); use 255")
    for kind, values in (("name", [c.name.lower() for c in specs]), ("colour", [c.color_rgb for c in specs])):
        seen: dict[Any, int] = {}
        for c, v in zip(specs, values, strict=True):
            if v in seen:
                raise _fail(source, f"classes {seen[v]} and {c.id} have the same {kind} {v!r}; make them distinct")
            seen[v] = c.id
    voids = [c.id for c in specs if c.void]
    if len(voids) != 1:
        raise _fail(source, f"exactly one class must have void: true (the unlabelled class), found {len(voids)}; "
                            "add e.g. {id: K, name: unlabelled, color: [0, 0, 0], void: true}")
    if any(c.void and c.drivable for c in specs):
        raise _fail(source, "the void class cannot be drivable")
    if len(specs) < 5:
        raise _fail(source, f"{len(specs)} classes; ESPNet needs at least 5 (the ESP module of its decoder splits the "
                            "class channels five ways): add classes, e.g. split 'other' into kinds of obstacle")
    return ClassFile(name=name, classes=tuple(specs), ignore_label=ignore, source=source)


def _parse_class(item: Any, n: int, source: str) -> ClassSpec:
    where = f"class entry {n}"
    if not isinstance(item, Mapping):
        raise _fail(source, f"{where} must be a mapping like {{id: 0, name: road, color: [128, 64, 128]}}")
    unknown = sorted(set(item) - {"id", "name", "color", "drivable", "void", "init_from"})
    if unknown:
        raise _fail(source, f"{where} has unknown key(s) {', '.join(map(str, unknown))}; allowed: id, name, color, "
                            "drivable, void, init_from")
    cid = item.get("id")
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise _fail(source, f"{where} needs an integer id, got {cid!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(source, f"class {cid} needs a non-empty name")
    color = item.get("color")
    if (not isinstance(color, Sequence) or isinstance(color, str) or len(color) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        raise _fail(source, f"class {cid} ({name}) needs color: [R, G, B] with integers 0..255, got {color!r}")
    flags = {}
    for key in ("drivable", "void"):
        value = item.get(key, False)
        if not isinstance(value, bool):
            raise _fail(source, f"class {cid} ({name}): {key} must be true or false, got {value!r}")
        flags[key] = value
    init = item.get("init_from", ())
    if isinstance(init, str | int) and not isinstance(init, bool):
        init = (init,)
    if not isinstance(init, Sequence) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in init):
        raise _fail(source, f"class {cid} ({name}): init_from must be a class name or a list of names, got {init!r}")
    return ClassSpec(id=cid, name=name.strip(), color_rgb=(int(color[0]), int(color[1]), int(color[2])),
                     drivable=flags["drivable"], void=flags["void"], init_from=tuple(str(v) for v in init))


def load_class_file(path: str | os.PathLike[str]) -> ClassFile:
    """Read and validate a YAML class file; raise :class:`LabelFileError` naming the problem and the fix."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelFileError(f"cannot read class file {p}: {exc.strerror}; give --classes a YAML file such as "
                             "config/camvid_classes.yaml") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelFileError(f"class file {p} is not valid YAML: {exc}") from exc
    return _parse(doc, str(p))


def _decode(path: Path) -> npt.NDArray[np.uint8]:
    data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise LabelFileError(f"cannot read label map {path}: not a readable image; re-export it as PNG")
    if img.dtype != np.uint8:
        raise LabelFileError(f"label map {path} is {img.dtype}; expected 8-bit class ids or 8-bit RGB colours")
    return np.asarray(img, np.uint8)


def _from_colors(img: npt.NDArray[np.uint8], classes: ClassFile, path: Path) -> npt.NDArray[np.uint8]:
    rgb = img[:, :, 2::-1] if img.shape[2] in (3, 4) else img  # BGR(A) as decoded → RGB
    packed = (rgb[:, :, 0].astype(np.int32) << 16) | (rgb[:, :, 1].astype(np.int32) << 8) | rgb[:, :, 2]
    lut = classes.color_lut()
    values, inverse = np.unique(packed.reshape(-1), return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in lut]
    if unknown:
        counts = np.bincount(inverse)
        worst = sorted(((int(counts[i]), int(v)) for i, v in enumerate(values) if int(v) in unknown), reverse=True)
        shown = ", ".join(f"RGB({v >> 16}, {(v >> 8) & 255}, {v & 255}) on {n} px" for n, v in worst[:3])
        raise LabelFileError(
            f"colour label map {path} holds {len(unknown)} colour(s) that no class of {classes.source} has: {shown}; "
            "add those colours to the class file, or re-export the labels without antialiasing"
        )
    mapped = np.asarray([lut[int(v)] for v in values], np.uint8)
    return mapped[inverse].reshape(packed.shape)


def _from_labelme(path: Path, classes: ClassFile) -> npt.NDArray[np.uint8]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabelFileError(f"cannot read labelme file {path}: {exc}; save it again from labelme") from exc
    try:
        h, w = int(doc["imageHeight"]), int(doc["imageWidth"])
        shapes = list(doc["shapes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelFileError(f"{path} is not a labelme file (needs imageHeight, imageWidth and shapes)") from exc
    by_name = {c.name.lower(): c.id for c in classes.classes}
    out = np.full((h, w), classes.void_id, np.uint8)
    for n, shape in enumerate(shapes):
        label = str(shape.get("label", "")).strip()
        cid = by_name.get(label.lower())
        if cid is None:
            raise LabelFileError(
                f"labelme file {path}, shape {n}: label {label!r} is not a class of {classes.source}; rename it in "
                f"labelme or add it to the class file (classes: {', '.join(c.name for c in classes.classes)})"
            )
        pts = np.asarray(shape.get("points", []), np.float64)
        kind = shape.get("shape_type") or "polygon"
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise LabelFileError(f"labelme file {path}, shape {n} ({label}): no points")
        if kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts
            pts = np.asarray([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif kind == "circle" and len(pts) == 2:
            (cx, cy), (px, py) = pts
            r = float(np.hypot(px - cx, py - cy))
            cv2.circle(out, (round(cx), round(cy)), round(r), cid, thickness=-1)
            continue
        elif kind not in ("polygon", "rectangle"):
            raise LabelFileError(
                f"labelme file {path}, shape {n} ({label}) is a {kind}; only polygon, rectangle and circle shapes "
                "cover an area: redraw it as a polygon"
            )
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], cid)
    return out


def read_label_map(
    path: str | os.PathLike[str], classes: ClassFile, image_size: tuple[int, int] | None = None
) -> npt.NDArray[np.uint8]:
    """Read a label map as ``(H, W) uint8`` class ids (values ``ignore_label`` kept as they are).

    ``path`` is a single-channel PNG of class ids, a colour PNG in the class file's palette, or a labelme JSON
    (shapes filled in order, later ones on top; pixels no shape covers are void). ``image_size`` ``(width, height)``
    is the size its image must have. Raises :class:`LabelFileError` for an unreadable file, another size, ids outside
    the class file, unknown colours or labelme labels.
    """
    p = Path(path)
    if p.suffix.lower() == ".json":
        ids = _from_labelme(p, classes)
    else:
        img = _decode(p)
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            ids = img.reshape(img.shape[:2])
            bad = (ids >= classes.num_classes) & (ids != classes.ignore_label)
            if bad.any():
                values = sorted({int(v) for v in np.unique(ids[bad])})
                raise LabelFileError(
                    f"label map {p} holds id(s) {values[:8]} outside the {classes.num_classes} classes of "
                    f"{classes.source} (0..{classes.num_classes - 1}, ignore {classes.ignore_label}); fix the labels "
                    "or "
                    "add the classes to the class file"
                )
        elif img.ndim == 3 and img.shape[2] in (3, 4):
            ids = _from_colors(img, classes, p)
        else:
            raise LabelFileError(f"label map {p} has shape {img.shape}; expected class ids (H, W) or colours (H, W, 3)")
    if image_size is not None and (ids.shape[1], ids.shape[0]) != tuple(image_size):
        raise LabelFileError(
            f"label map {p} is {ids.shape[1]}x{ids.shape[0]} but its image is {image_size[0]}x{image_size[1]}; "
            "label maps must have their image's size (re-export the labels at the image's resolution)"
        )
    return np.ascontiguousarray(ids)
