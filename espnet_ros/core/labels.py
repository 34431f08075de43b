"""Label sets: class names, ids, palettes and the drivable classes of each dataset the weights were trained on.

A :class:`LabelSet` is immutable data. Class ids are the network's output channels (Cityscapes trainIds 0..18 plus
void 19; CamVid 0..10 plus unlabelled 11). Palettes are RGB; :meth:`LabelSet.palette_bgr` gives the same in OpenCV's
order. :meth:`LabelSet.resolve_classes` turns user input such as ``["road", "1"]`` into validated ids, which is what
the drivable-area settings of the node and the command line use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["CAMVID", "CITYSCAPES", "LABEL_SETS", "VOID_MEANINGS", "LabelSet", "UnknownClassError"]

VOID_MEANINGS = ("unknown", "obstacle")
"""What void / unlabelled pixels mean for the ground outputs (the node's ``grid_void``, the CLI's ``--grid-void``)."""


class UnknownClassError(ValueError):
    """A class name or id that the label set does not contain."""


@dataclass(frozen=True)
class LabelSet:
    """The classes a model predicts.

    Attributes:
        name: short identifier (``cityscapes``, ``camvid``).
        names: class names indexed by class id.
        colors_rgb: one ``(R, G, B)`` triple per class id.
        ignore_id: the void / unlabelled class id (predicted by the network, ignored by the standard protocol).
        default_drivable: class ids that count as drivable unless the user says otherwise.
        dataset_ids: optional map from class id to the dataset's own label id (Cityscapes labelIds).
    """

    name: str
    names: tuple[str, ...]
    colors_rgb: tuple[tuple[int, int, int], ...]
    ignore_id: int
    default_drivable: tuple[int, ...]
    dataset_ids: tuple[int, ...] | None = None
    _lookup: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors_rgb):
            raise ValueError(f"label set {self.name}: {len(self.names)} names but {len(self.colors_rgb)} colours")
        if self.dataset_ids is not None and len(self.dataset_ids) != len(self.names):
            raise ValueError(f"label set {self.name}: dataset_ids must have one entry per class")
        for i, n in enumerate(self.names):
            self._lookup[_normalise(n)] = i

    @property
    def num_classes(self) -> int:
        """Number of network output channels (void / unlabelled included)."""
        return len(self.names)

    def palette_rgb(self) -> npt.NDArray[np.uint8]:
        """Return a ``(256, 3) uint8`` RGB lookup table; ids beyond the label set map to black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors_rgb, np.uint8)
        return lut

    def palette_bgr(self) -> npt.NDArray[np.uint8]:
        """Return a ``(256, 3) uint8`` BGR lookup table (OpenCV order); ids beyond the set map to black."""
        return np.ascontiguousarray(self.palette_rgb()[:, ::-1])

    def class_id(self, key: str | int) -> int:
        """Return the class id for a name (case-, space- and underscore-insensitive) or an id (int or digits)."""
        if isinstance(key, bool):
            raise UnknownClassError(f"{key!r} is not a class of {self.name}")
        if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
            idx = int(key)
            if 0 <= idx < self.num_classes:
                return idx
            raise UnknownClassError(
                f"class id {idx} is out of range for {self.name}: valid ids are 0..{self.num_classes - 1}"
            )
        found = self._lookup.get(_normalise(str(key)))
        if found is None:
            raise UnknownClassError(
                f"unknown class {key!r} for label set {self.name}; valid names: {', '.join(self.names)}"
            )
        return found

    def resolve_classes(self, keys: Iterable[str | int] | None) -> tuple[int, ...]:
        """Resolve names/ids to sorted unique ids; ``None`` or empty gives :attr:`default_drivable`."""
        if keys is None:
            return self.default_drivable
        items = [k for k in keys if not (isinstance(k, str) and not k.strip())]
        if not items:
            return self.default_drivable
        return tuple(sorted({self.class_id(k) for k in items}))

    def mask_lut(self, ids: Iterable[int]) -> npt.NDArray[np.uint8]:
        """Return a ``(256,) uint8`` lookup table that maps the given class ids to 255 and all else to 0."""
        lut = np.zeros(256, np.uint8)
        for i in ids:
            lut[int(i)] = 255
        return lut

    def void_lut(self, meaning: str) -> npt.NDArray[np.uint8] | None:
        """The ground outputs' ``unknown_lut`` for one of :data:`VOID_MEANINGS`.

        ``unknown``: the void class, whose pixels then count neither as drivable nor as not; ``obstacle``: ``None``
        (void is non-drivable like every class that is not drivable). Raises ``ValueError`` for anything else.
        """
        if meaning not in VOID_MEANINGS:
            raise ValueError(f"void meaning {meaning!r}; expected one of {', '.join(VOID_MEANINGS)}")
        return self.mask_lut([self.ignore_id]) if meaning == "unknown" else None


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


CITYSCAPES = LabelSet(
    name="cityscapes",
    names=(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "void",
    ),
    colors_rgb=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 0),
    ),
    ignore_id=19,
    default_drivable=(0,),
    dataset_ids=(7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0),
)
"""Cityscapes trainIds 0..18 plus void (19), official palette, trainId → labelId map."""

CAMVID = LabelSet(
    name="camvid",
    names=(
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
        "Bicyclist", "Unlabelled",
    ),
    colors_rgb=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0),
    ),
    ignore_id=11,
    default_drivable=(3,),
)
"""CamVid 11 classes plus Unlabelled (11), with the palette of the SegNet CamVid release."""

LABEL_SETS: dict[str, LabelSet] = {CITYSCAPES.name: CITYSCAPES, CAMVID.name: CAMVID}
