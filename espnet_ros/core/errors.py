"""Domain exceptions of espnet_ros and the documented limits they enforce.

Every error says what was wrong, what was expected and how to fix it. Callers catch :class:`EspnetRosError` to
handle everything that bad input or a bad installation can cause, without swallowing programming errors.
"""

from __future__ import annotations

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "BackendError",
    "EspnetRosError",
    "ImageError",
    "TrainError",
    "WeightsError",
]

MAX_IMAGE_SIDE = 16384
"""Largest accepted image width or height, in pixels."""

MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest accepted image area (width x height), in pixels (about 200 MB as 3-channel uint8)."""


class EspnetRosError(Exception):
    """Base class of all espnet_ros domain errors."""


class WeightsError(EspnetRosError):
    """A weights file is missing, damaged, of the wrong preset, or cannot be loaded."""


class ImageError(EspnetRosError, ValueError):
    """An image handed to the segmenter (or decoded from a message) is not usable."""


class BackendError(EspnetRosError):
    """An inference backend is unknown, unavailable here, or its compiled artifact cannot be built or loaded."""


class TrainError(EspnetRosError):
    """Training inputs or options that cannot work; the message names the file or option and the fix."""
