"""Pieces shared by the ``espnet-ros`` subcommands: the command-line error, progress bars, image files, grid options.

No ROS; heavy modules (torch, OpenCV, tqdm) are imported when used, so that ``espnet-ros --help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espnet_ros.core.errors import EspnetRosError

if TYPE_CHECKING:
    from espnet_ros.core.geometry import CameraPose, GridSpec

__all__ = ["DEFAULT_CAMERA_MOUNT", "CliError", "csv_items", "grid_settings", "progress_bar", "write_image"]

DEFAULT_CAMERA_MOUNT = (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
"""``--camera-mount`` when not given: 1.5 m above the grid origin, level, looking along +x."""


class CliError(EspnetRosError):
    """A command-line level problem (bad option combination, unwritable output)."""


def progress_bar(quiet: bool, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (hidden with ``quiet``)."""
    from tqdm import tqdm

    return tqdm(disable=quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)


def csv_items(text: str | None) -> tuple[str, ...]:
    """The non-empty, stripped items of a comma-separated option (``None`` or empty: none)."""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def write_image(path: Path, image: Any, params: Sequence[int] = ()) -> None:
    """Encode ``image`` by the suffix of ``path`` and write it (one-line errors naming the path)."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise CliError(f"cannot encode {path.name}")
    try:
        np.asarray(data).tofile(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}; check that the output folder is writable") from exc


def parse_floats(option: str, text: str, names: str) -> tuple[float, ...]:
    """Parse ``--option a,b,c`` into floats, one per comma-separated name in ``names``."""
    fields = names.split(",")
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != len(fields) or not all(math.isfinite(v) for v in values):
        raise CliError(f"{option} {text!r}: expected {len(fields)} comma-separated numbers {names}")
    return values


def grid_settings(args: argparse.Namespace) -> tuple[GridSpec, CameraPose, tuple[float, ...] | None] | None:
    """The grid, camera pose and intrinsics of ``segment --grid`` (``None`` without ``--grid``), validated."""
    from espnet_ros.core.geometry import CameraPose, GridSpec

    given = [o for o, v in (("--camera-intrinsics", args.camera_intrinsics), ("--camera-mount", args.camera_mount),
                            ("--grid-resolution", args.grid_resolution), ("--grid-range", args.grid_range))
             if v is not None]
    if not args.grid:
        if given:
            raise CliError(f"{', '.join(given)} only apply to the bird's-eye grid; add --grid")
        return None
    intrinsics = None
    if args.camera_intrinsics is not None:
        intrinsics = parse_floats("--camera-intrinsics", args.camera_intrinsics, "FX,FY,CX,CY")
        if intrinsics[0] <= 0 or intrinsics[1] <= 0:
            raise CliError(f"--camera-intrinsics {args.camera_intrinsics!r}: FX and FY must be > 0 pixels")
    mount = (DEFAULT_CAMERA_MOUNT if args.camera_mount is None
             else parse_floats("--camera-mount", args.camera_mount, "X,Y,Z,ROLL,PITCH,YAW"))
    if mount[2] <= 0:
        raise CliError(f"--camera-mount {args.camera_mount!r}: Z is the camera's height above the ground and must "
                       "be > 0, e.g. 1.5")
    spec = GridSpec.from_range(20.0 if args.grid_range is None else args.grid_range,
                               0.1 if args.grid_resolution is None else args.grid_resolution)
    return spec, CameraPose.from_body_rpy(*mount), intrinsics
