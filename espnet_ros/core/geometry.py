"""Ground geometry of one monocular camera: masks to a bird's-eye occupancy grid and to obstacle points.

This module owns the camera model (intrinsics and lens distortion as in a ``sensor_msgs/CameraInfo``: ``K``,
``D`` and the ``plumb_bob`` / ``rational_polynomial`` / ``equidistant`` models), the pose of the camera's optical
frame (z forward, x right, y down) in the grid frame, the grid layout, and the projection of every mask pixel onto
the ground plane ``z = 0`` of the grid frame. A :class:`GroundProjector` does the expensive part once per
(camera, pose, grid settings, mask size): it undistorts every pixel, intersects its ray with the ground, drops
pixels above the horizon or beyond ``max_range``, and keeps, per grid cell, the flat indices of (at most
``max_pixels_per_cell``) pixels grouped by cell. A frame then costs one gather, a cumulative sum and a little
integer arithmetic (:meth:`GroundProjector.grid`), plus one gather per sampled image column for the drivable
boundary (:meth:`GroundProjector.obstacle_points`). :class:`ProjectorCache` keeps recent projectors. Cell values
follow ``nav_msgs/OccupancyGrid``: 0 free (all pixels drivable), 100 occupied (none drivable), the rounded share of
non-drivable pixels in between, -1 unknown (fewer than ``min_pixels`` pixels; pixels of classes given as unknown,
such as void, do not count). Arrays are indexed
``grid[j, i]`` with ``i`` along +x and ``j`` along +y of the grid frame, the row-major order of
``OccupancyGrid.data``. :func:`render_grid` draws a grid as a picture and :func:`benchmark_grid` times the per-frame
cost. Nothing here imports ROS.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from espnet_ros.core.errors import MAX_IMAGE_SIDE, EspnetRosError

__all__ = [
    "DISTORTION_MODELS",
    "CameraModel",
    "CameraPose",
    "GeometryError",
    "GridSpec",
    "GroundProjector",
    "GroundResult",
    "ProjectorCache",
    "benchmark_grid",
    "render_grid",
    "scale_pixel_coordinate",
]

_LOG = logging.getLogger(__name__)

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none")
"""Lens models understood by :class:`CameraModel` (``""`` in a CameraInfo means ``"none"``)."""

_COEFF_COUNTS = {"plumb_bob": (4, 5), "rational_polynomial": (8,), "equidistant": (4,)}
_MAX_GRID_CELLS = 4096 * 4096
_FREE, _OCCUPIED, _UNKNOWN = 0, 100, -1
_BLOCKED, _DRIVABLE, _UNSEEN = 0, 1, 2  # what one sampled mask pixel says (GroundProjector._codes)
# Undistortion is accepted where the re-distorted ray lands within this many pixels of the pixel centre.
_REPROJECTION_TOLERANCE_PX = 1e-2
_MIN_FOCAL_PX = 1e-3  # K of a real camera: focal lengths and principal point in these bounds (else overflows)
_MAX_PIXEL_VALUE = 1e8
_MAX_DISTORTION_COEFFICIENT = 1e4  # |D| of real lens models stays far below; beyond it the polynomials overflow


class GeometryError(EspnetRosError, ValueError):
    """Camera intrinsics, pose, grid settings or a mask that the ground projection cannot use."""


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise GeometryError(f"{name} must be a finite number, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------------------
# Camera model
# --------------------------------------------------------------------------------------------------------------



def scale_pixel_coordinate(c: float, scale: float) -> float:
    """A pixel coordinate (or principal point) for the image resized by ``scale``, pixel centres aligned.

    ``(c + 0.5) * scale - 0.5``: pixel ``i`` covers ``[i - 0.5, i + 0.5)``, as in ``cv2.resize`` and the segmenter's
    mask resize, so that mask pixel ``(r, c)`` describes the camera pixels it was made from.
    """
    return (c + 0.5) * scale - 0.5


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics and lens distortion of a camera, as in ``sensor_msgs/CameraInfo``.

    Attributes:
        width: image width in pixels that ``k`` refers to.
        height: image height in pixels.
        k: the 3x3 camera matrix ``K`` row-major (``fx, s, cx, 0, fy, cy, 0, 0, 1``); pixel centres are at integer
            coordinates, as in ROS and OpenCV.
        d: distortion coefficients in OpenCV / ROS order (``k1, k2, p1, p2[, k3]`` for ``plumb_bob``,
            ``k1, k2, p1, p2, k3, k4, k5, k6`` for ``rational_polynomial``, ``k1, k2, k3, k4`` for
            ``equidistant``); empty means none (all-zero coefficients of ``plumb_bob`` /
            ``rational_polynomial`` are stored as empty; ``equidistant`` keeps four, since even without
            coefficients it is a fisheye projection, ``r_d = theta``).
        distortion_model: one of :data:`DISTORTION_MODELS`; ``""`` is read as ``"none"``.

    The record is immutable and hashable, so it serves as a cache key.
    """

    width: int
    height: int
    k: tuple[float, ...]
    d: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        for name, side in (("width", self.width), ("height", self.height)):
            if int(side) != side or not 0 < int(side) <= MAX_IMAGE_SIDE:
                raise GeometryError(
                    f"camera {name} must be an integer in 1..{MAX_IMAGE_SIDE}, got {side!r}; "
                    "check the CameraInfo width/height (0 means the camera is not calibrated)"
                )
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        k = tuple(float(v) for v in np.asarray(self.k, dtype=np.float64).reshape(-1))
        if len(k) != 9 or not all(math.isfinite(v) for v in k):
            raise GeometryError(f"K must hold 9 finite numbers (a 3x3 matrix row-major), got {self.k!r}")
        if not any(k):
            raise GeometryError(
                "K is all zeros, which is how an uncalibrated camera publishes its CameraInfo; calibrate the "
                "camera (camera_calibration) or give the intrinsics fx, fy, cx, cy as parameters"
            )
        if k[0] <= 0 or k[4] <= 0 or k[3] != 0 or k[6] != 0 or k[7] != 0 or k[8] != 1:
            raise GeometryError(
                f"K must look like [fx, s, cx, 0, fy, cy, 0, 0, 1] with fx, fy > 0, got {list(k)}; "
                "check the camera calibration"
            )
        if not (_MIN_FOCAL_PX <= k[0] <= _MAX_PIXEL_VALUE and _MIN_FOCAL_PX <= k[4] <= _MAX_PIXEL_VALUE
                and max(abs(k[1]), abs(k[2]), abs(k[5])) <= _MAX_PIXEL_VALUE):
            raise GeometryError(
                f"K = {list(k)} holds focal lengths outside [{_MIN_FOCAL_PX:g}, {_MAX_PIXEL_VALUE:g}] pixels or a "
                f"skew or principal point beyond +-{_MAX_PIXEL_VALUE:g}, which no real camera has; check the camera "
                "calibration"
            )
        object.__setattr__(self, "k", k)
        model = (self.distortion_model or "none").strip().lower()
        d = tuple(float(v) for v in np.asarray(self.d, dtype=np.float64).reshape(-1))
        if not all(math.isfinite(v) for v in d):
            raise GeometryError(f"distortion coefficients D must be finite, got {list(d)}")
        if any(abs(v) > _MAX_DISTORTION_COEFFICIENT for v in d):
            raise GeometryError(
                f"distortion coefficients D = {list(d)} hold a value beyond +-{_MAX_DISTORTION_COEFFICIENT:g}, which "
                "no lens model of a real camera has; check the camera calibration (camera_calibration writes D)"
            )
        if model not in DISTORTION_MODELS:
            raise GeometryError(
                f"distortion model {self.distortion_model!r} is not supported; expected one of "
                f"{', '.join(DISTORTION_MODELS)} (rectify the image upstream, e.g. with image_proc, and use the "
                "rectified CameraInfo, or recalibrate with a supported model)"
            )
        if model == "equidistant":
            d = d or (0.0, 0.0, 0.0, 0.0)  # a fisheye projection even without coefficients (r_d = theta)
        elif not any(d):
            d = ()  # all-zero coefficients of a pinhole lens model: no distortion
        if model == "none" and d:
            raise GeometryError(
                f"distortion model is empty/'none' but D has non-zero coefficients {list(d)}; set the model "
                "(plumb_bob, rational_polynomial or equidistant) that the calibration used"
            )
        if d and len(d) not in _COEFF_COUNTS[model]:
            raise GeometryError(
                f"distortion model {model} takes {' or '.join(map(str, _COEFF_COUNTS[model]))} coefficients, "
                f"got {len(d)}: {list(d)}"
            )
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "distortion_model", model)

    # ---- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_camera_info_fields(
        cls,
        width: int,
        height: int,
        k: Sequence[float] | npt.ArrayLike,
        d: Sequence[float] | npt.ArrayLike = (),
        distortion_model: str = "plumb_bob",
        *,
        binning_x: int = 0,
        binning_y: int = 0,
        roi: tuple[int, int, int, int] | None = None,
    ) -> CameraModel:
        """Build a model from the plain fields of a CameraInfo message (no ROS types).

        ``binning_*`` (0 and 1 mean none) and ``roi`` (``x_offset, y_offset, width, height``; all zero means the
        full image) describe the image actually published, as in the CameraInfo documentation: the returned
        model refers to that image (intrinsics shifted by the ROI offset, then divided by the binning, as
        ``image_geometry`` does).
        """
        base = cls(width=int(width), height=int(height), k=tuple(np.asarray(k, np.float64).reshape(-1)),
                   d=tuple(np.asarray(d, np.float64).reshape(-1)), distortion_model=distortion_model)
        bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
        x_off, y_off, roi_w, roi_h = (0, 0, 0, 0) if roi is None else (int(v) for v in roi)
        if (bx, by) == (1, 1) and (roi_w, roi_h) in ((0, 0), (base.width, base.height)) and not (x_off or y_off):
            return base
        if roi_w == 0 or roi_h == 0:
            x_off, y_off, roi_w, roi_h = 0, 0, base.width, base.height
        if x_off < 0 or y_off < 0 or x_off + roi_w > base.width or y_off + roi_h > base.height:
            raise GeometryError(
                f"CameraInfo roi (x={x_off}, y={y_off}, w={roi_w}, h={roi_h}) is outside the calibrated "
                f"{base.width}x{base.height} image"
            )
        fx, s, cx, _, fy, cy, *_ = base.k
        k_new = (fx / bx, s / bx, (cx - x_off) / bx, 0.0, fy / by, (cy - y_off) / by, 0.0, 0.0, 1.0)
        return cls(width=roi_w // bx, height=roi_h // by, k=k_new, d=base.d, distortion_model=base.distortion_model)

    @classmethod
    def pinhole(cls, width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> CameraModel:
        """A distortion-free camera from focal lengths and principal point in pixels."""
        return cls(width=width, height=height, k=(fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0), d=(),
                   distortion_model="none")

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera for the image resized to ``width`` x ``height`` (e.g. a mask at network size).

        Pixel centres stay aligned as with ``cv2.resize``: ``c' = (c + 0.5) * scale - 0.5``, ``f' = f * scale``.
        Distortion coefficients act on normalised coordinates and do not change.
        """
        if (int(width), int(height)) == (self.width, self.height):
            return self
        if int(width) <= 0 or int(height) <= 0:
            raise GeometryError(f"cannot scale the camera to {width}x{height}; both sides must be positive")
        sx, sy = int(width) / self.width, int(height) / self.height
        fx, s, cx, _, fy, cy, *_ = self.k
        k_new = (fx * sx, s * sx, scale_pixel_coordinate(cx, sx), 0.0, fy * sy, scale_pixel_coordinate(cy, sy),
                 0.0, 0.0, 1.0)
        return CameraModel(width=int(width), height=int(height), k=k_new, d=self.d,
                           distortion_model=self.distortion_model)

    # ---- accessors --------------------------------------------------------------------------------------------

    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        """``K`` as a ``(3, 3) float64`` array."""
        return np.asarray(self.k, np.float64).reshape(3, 3)

    @property
    def dist_coeffs(self) -> npt.NDArray[np.float64]:
        """``D`` as a ``(N,) float64`` array (zeros of the model's length when there is no distortion)."""
        if self.d:
            return np.asarray(self.d, np.float64)
        return np.zeros(4 if self.distortion_model == "equidistant" else 5, np.float64)

    # ---- lens model -------------------------------------------------------------------------------------------

    def distort(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Apply the lens model to normalised undistorted coordinates (``X/Z, Y/Z``); returns distorted ones."""
        if not self.d:
            return x, y
        if self.distortion_model == "equidistant":
            k1, k2, k3, k4 = self.d
            r = np.hypot(x, y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
            scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
            return x * scale, y * scale
        c = list(self.d) + [0.0] * (8 - len(self.d))
        k1, k2, p1, p2, k3, k4, k5, k6 = c
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd

    def _max_undistorted_radius(self) -> float:
        """Largest normalised radius up to which the radial part of the lens model is increasing (invertible)."""
        if not self.d:
            return math.inf
        if self.distortion_model == "equidistant":
            theta = np.linspace(0.0, math.pi / 2, 20001)[:-1]
            k1, k2, k3, k4 = self.d
            t2 = theta * theta
            with np.errstate(all="ignore"):
                theta_d = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
                bad = np.flatnonzero(~(np.diff(theta_d) > 0))
            return math.tan(theta[bad[0]]) if bad.size else math.inf
        k1, k2, _, _, k3, k4, k5, k6 = list(self.d) + [0.0] * (8 - len(self.d))
        r = np.linspace(0.0, 50.0, 200001)
        r2 = r * r
        with np.errstate(all="ignore"):
            rd = r * (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
            bad = np.flatnonzero(~(np.diff(rd) > 0))
        return float(r[bad[0]]) if bad.size else math.inf

    def undistort_pixels(self, u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
                         ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Normalised undistorted coordinates of pixel positions, and where the lens model could be inverted.

        Uses ``cv2.undistortPoints`` (``cv2.fisheye.undistortPoints`` for ``equidistant``), then checks every
        result by distorting it again; points that missed by more than 0.01 px get a Newton refinement, and
        points that still miss, or lie beyond the radius where the lens model folds back, are marked invalid.
        """
        fx, s, cx, _, fy, cy, *_ = self.k
        u = np.asarray(u, np.float64).reshape(-1)
        v = np.asarray(v, np.float64).reshape(-1)
        yd = (v - cy) / fy
        xd = (u - cx - s * yd) / fx
        if not self.d:
            return xd, yd, np.ones(xd.shape, np.bool_)
        k_noskew = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        src = np.stack([xd * fx + cx, yd * fy + cy], axis=-1).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(src, k_noskew, self.dist_coeffs, criteria=criteria)
        else:
            out = cv2.undistortPoints(src, k_noskew, self.dist_coeffs, criteria=criteria)
        out = np.asarray(out, np.float64).reshape(-1, 2)
        x, y = out[:, 0].copy(), out[:, 1].copy()
        err = self._residual_px(x, y, xd, yd)
        redo = np.flatnonzero(~(err <= _REPROJECTION_TOLERANCE_PX * 0.01))
        if redo.size:
            x[redo], y[redo], err[redo] = self._newton(x[redo], y[redo], xd[redo], yd[redo])
        ok = err <= _REPROJECTION_TOLERANCE_PX
        r_max = self._max_undistorted_radius()
        if math.isfinite(r_max):
            ok &= np.hypot(x, y) < r_max
        if redo.size:
            _LOG.debug("undistortion: %d of %d points refined, %d invalid", redo.size, x.size, int((~ok).sum()))
        return x, y, ok

    def _residual_px(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                     xd: npt.NDArray[np.float64], yd: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with np.errstate(all="ignore"):
            px, py = self.distort(x, y)
            err = np.hypot((px - xd) * self.k[0], (py - yd) * self.k[4])
        return np.where(np.isfinite(err), err, np.inf)

    def _newton(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], xd: npt.NDArray[np.float64],
                yd: npt.NDArray[np.float64]
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        bad = ~np.isfinite(x) | ~np.isfinite(y)
        x = np.where(bad, xd, x)
        y = np.where(bad, yd, y)
        h = 1e-7
        with np.errstate(all="ignore"):
            for _ in range(30):
                fx0, fy0 = self.distort(x, y)
                rx, ry = fx0 - xd, fy0 - yd
                ax, ay = self.distort(x + h, y)
                bx, by = self.distort(x - h, y)
                cx_, cy_ = self.distort(x, y + h)
                dx_, dy_ = self.distort(x, y - h)
                j11, j21 = (ax - bx) / (2 * h), (ay - by) / (2 * h)
                j12, j22 = (cx_ - dx_) / (2 * h), (cy_ - dy_) / (2 * h)
                det = j11 * j22 - j12 * j21
                step_x = (j22 * rx - j12 * ry) / det
                step_y = (j11 * ry - j21 * rx) / det
                usable = np.isfinite(step_x) & np.isfinite(step_y) & (det > 0)
                x = np.where(usable, x - step_x, x)
                y = np.where(usable, y - step_y, y)
        return x, y, self._residual_px(x, y, xd, yd)


# --------------------------------------------------------------------------------------------------------------
# Pose
# --------------------------------------------------------------------------------------------------------------

# Rotation of a camera's optical frame (z forward, x right, y down) in its REP-103 body frame (x forward, y left,
# z up): the columns are the optical axes expressed in the body frame.
_OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _rpy_to_matrix(roll: float, pitch: float, yaw: float) -> npt.NDArray[np.float64]:
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def _matrix_to_rpy(r: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    pitch = math.asin(max(-1.0, min(1.0, -float(r[2, 0]))))
    if abs(math.cos(pitch)) > 1e-9:
        roll = math.atan2(float(r[2, 1]), float(r[2, 2]))
        yaw = math.atan2(float(r[1, 0]), float(r[0, 0]))
    else:  # gimbal lock: only roll - yaw (or roll + yaw) is defined; put it all in yaw
        roll = 0.0
        yaw = math.atan2(-float(r[0, 1]), float(r[1, 1]))
    return roll, pitch, yaw


def _quaternion_to_matrix(q: Sequence[float]) -> npt.NDArray[np.float64]:
    qx, qy, qz, qw = (float(v) for v in q)
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not math.isfinite(n) or n < 1e-9:
        raise GeometryError(f"quaternion (x, y, z, w) = {tuple(q)} cannot be normalised; expected a unit quaternion")
    qx, qy, qz, qw = qx / n, qy / n, qz / n, qw / n
    return np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ])


@dataclass(frozen=True)
class CameraPose:
    """Pose of the camera's OPTICAL frame (z forward, x right, y down) in the grid frame.

    ``x, y, z`` in metres; ``roll, pitch, yaw`` in radians, fixed-axis X-Y-Z as in REP-103 and tf2
    (``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``). A camera looking straight ahead along +x of the grid frame has
    ``roll = -pi/2, pitch = 0, yaw = -pi/2``; :meth:`from_body_rpy` takes the friendlier angles of the camera's
    body frame (x forward, z up) instead. ``z`` must be above the ground plane ``z = 0``.
    """

    x: float
    y: float
    z: float
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x", "y", "z", "roll", "pitch", "yaw"):
            object.__setattr__(self, name, _finite(f"camera pose {name}", getattr(self, name)))

    @classmethod
    def from_body_rpy(cls, x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0,
                      yaw: float = 0.0) -> CameraPose:
        """Pose from the camera BODY frame (REP-103: x forward, y left, z up, like a URDF ``camera_link``).

        A positive ``pitch`` tilts the camera down, ``yaw`` turns it left, ``roll`` rotates it about its
        viewing direction. The optical frame is the body frame rotated by ``(-pi/2, 0, -pi/2)``.
        """
        rot = _rpy_to_matrix(roll, pitch, yaw) @ _OPTICAL_IN_BODY
        return cls(float(x), float(y), float(z), *_matrix_to_rpy(rot))

    @classmethod
    def from_matrix(cls, matrix: npt.ArrayLike) -> CameraPose:
        """Pose from a ``(4, 4)`` homogeneous transform (optical frame to grid frame)."""
        m = np.asarray(matrix, np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise GeometryError(f"expected a finite 4x4 transform, got shape {m.shape}")
        rot = m[:3, :3]
        if not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
            raise GeometryError("the 3x3 block of the transform is not a rotation (orthonormal, det +1)")
        return cls(float(m[0, 3]), float(m[1, 3]), float(m[2, 3]), *_matrix_to_rpy(rot))

    @classmethod
    def from_translation_quaternion(cls, translation: Sequence[float], quaternion: Sequence[float]) -> CameraPose:
        """Pose from a translation ``(x, y, z)`` and a quaternion ``(x, y, z, w)``, as in a TF transform."""
        if len(translation) != 3 or len(quaternion) != 4:
            raise GeometryError("expected translation (x, y, z) and quaternion (x, y, z, w)")
        rot = _quaternion_to_matrix(quaternion)
        return cls(float(translation[0]), float(translation[1]), float(translation[2]), *_matrix_to_rpy(rot))

    def rotation_matrix(self) -> npt.NDArray[np.float64]:
        """``(3, 3)`` rotation whose columns are the optical x, y, z axes in the grid frame."""
        return _rpy_to_matrix(self.roll, self.pitch, self.yaw)

    def matrix(self) -> npt.NDArray[np.float64]:
        """``(4, 4)`` homogeneous transform from the optical frame to the grid frame."""
        m = np.eye(4)
        m[:3, :3] = self.rotation_matrix()
        m[:3, 3] = (self.x, self.y, self.z)
        return m

    def quaternion(self) -> tuple[float, float, float, float]:
        """The orientation as a unit quaternion ``(x, y, z, w)`` with ``w >= 0``."""
        hr, hp, hy = self.roll / 2, self.pitch / 2, self.yaw / 2
        cr, sr, cp, sp, cy, sy = math.cos(hr), math.sin(hr), math.cos(hp), math.sin(hp), math.cos(hy), math.sin(hy)
        q = (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
             cr * cp * cy + sr * sp * sy)
        return q if q[3] >= 0 else (-q[0], -q[1], -q[2], -q[3])

    def key(self, decimals: int = 6) -> tuple[float, ...]:
        """The pose rounded to ``decimals`` (micrometres / microradians): a cache key that absorbs float noise."""
        m = self.matrix()
        return tuple(round(float(v), decimals) + 0.0 for v in m[:3, :].reshape(-1))


# --------------------------------------------------------------------------------------------------------------
# Grid layout
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """Layout of the bird's-eye grid and the rules that turn pixels into cell values.

    Attributes:
        resolution: cell side in metres.
        width: cells along +x of the grid frame (``OccupancyGrid.info.width``).
        height: cells along +y (``OccupancyGrid.info.height``).
        origin_x, origin_y: grid-frame position of the outer corner of cell ``(0, 0)`` (``info.origin``).
        min_pixels: pixels a cell needs before it counts as seen; fewer leave it unknown (-1).
        max_range: pixels whose ground point lies farther than this horizontal distance (metres) from the point
            below the camera map to nothing.
        max_pixels_per_cell: at most this many pixels per cell are sampled (spread evenly over the cell's pixels),
            which bounds the per-frame cost near the camera without changing the share much.
        point_columns: obstacle points are searched in this many evenly spaced mask columns (every column when
            the mask is narrower); 512 columns of a 90-degree camera are 6 cm apart at 20 m.
    """

    resolution: float = 0.1
    width: int = 400
    height: int = 400
    origin_x: float = -20.0
    origin_y: float = -20.0
    min_pixels: int = 3
    max_range: float = 20.0
    max_pixels_per_cell: int = 32
    point_columns: int = 512

    def __post_init__(self) -> None:
        res = _finite("grid resolution", self.resolution)
        if res <= 0:
            raise GeometryError(f"grid resolution must be > 0 metres, got {res}")
        for name in ("width", "height", "min_pixels", "max_pixels_per_cell", "point_columns"):
            value = getattr(self, name)
            if int(value) != value or int(value) < 1:
                raise GeometryError(f"grid {name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.width * self.height > _MAX_GRID_CELLS:
            raise GeometryError(
                f"grid of {self.width}x{self.height} cells is larger than the limit of {_MAX_GRID_CELLS} cells; "
                "use a coarser resolution or a shorter range"
            )
        if self.max_pixels_per_cell < self.min_pixels:
            raise GeometryError(
                f"max_pixels_per_cell ({self.max_pixels_per_cell}) must be >= min_pixels ({self.min_pixels})"
            )
        if self.max_pixels_per_cell > 255:
            raise GeometryError(f"max_pixels_per_cell must be <= 255, got {self.max_pixels_per_cell}")
        max_range = _finite("grid max_range", self.max_range)
        if max_range <= 0:
            raise GeometryError(f"grid max_range must be > 0 metres, got {max_range}")
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "max_range", max_range)
        object.__setattr__(self, "origin_x", _finite("grid origin_x", self.origin_x))
        object.__setattr__(self, "origin_y", _finite("grid origin_y", self.origin_y))

    @classmethod
    def from_range(cls, max_range: float = 20.0, resolution: float = 0.1, *, min_pixels: int = 3,
                   max_pixels_per_cell: int = 32, point_columns: int = 512) -> GridSpec:
        """A square grid centred on the grid-frame origin that covers ``max_range`` in every direction.

        The origin is a whole number of cells from the grid-frame origin, as Nav2's static layer prefers.
        """
        res = _finite("grid resolution", resolution)
        rng = _finite("grid max_range", max_range)
        if res <= 0 or rng <= 0:
            raise GeometryError(f"max_range ({rng}) and resolution ({res}) must both be > 0")
        half = max(1, math.ceil(rng / res - 1e-9))
        return cls(resolution=res, width=2 * half, height=2 * half, origin_x=-half * res, origin_y=-half * res,
                   min_pixels=min_pixels, max_range=rng, max_pixels_per_cell=max_pixels_per_cell,
                   point_columns=point_columns)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``: the shape of the grid arrays."""
        return self.height, self.width

    def cell_centers(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Grid-frame ``x`` and ``y`` of every cell centre, each of shape :attr:`shape`."""
        xs = self.origin_x + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.origin_y + (np.arange(self.height) + 0.5) * self.resolution
        gx, gy = np.meshgrid(xs, ys)
        return gx, gy


# --------------------------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundResult:
    """What one mask gives on the ground.

    Attributes:
        grid: ``(spec.height, spec.width) int8`` cell values (0 free .. 100 occupied, -1 unknown), row ``j`` along
            +y, column ``i`` along +x of the grid frame.
        points: ``(N, 3) float32`` grid-frame points (``z = 0``) where non-drivable area begins along each sampled
            image column, nearest first.
    """

    grid: npt.NDArray[np.int8]
    points: npt.NDArray[np.float32]


def _lut01(table: npt.ArrayLike | None, name: str) -> npt.NDArray[np.uint8] | None:
    """A ``(256,)`` class-id table as 0/1 (``None`` stays ``None``); ``name`` is the argument named in errors."""
    if table is None:
        return None
    lut = np.asarray(table)
    if lut.shape != (256,):
        raise GeometryError(f"{name} must have shape (256,) (one entry per class id), got {lut.shape}")
    return (lut != 0).astype(np.uint8)


class GroundProjector:
    """The per-pixel ground mapping of one (camera, pose, grid spec, mask size), computed once.

    Args:
        camera: intrinsics and distortion; scaled to ``mask_size`` when that differs from the camera's size.
        pose: the optical frame in the grid frame.
        spec: grid layout and cell rules.
        mask_size: ``(width, height)`` of the masks that will be projected; defaults to the camera's size.

    A pixel maps to the ground when its ray points below the horizon, meets ``z = 0`` within
    ``spec.max_range`` of the point below the camera, and the lens model could be inverted there.
    """

    def __init__(self, camera: CameraModel, pose: CameraPose, spec: GridSpec,
                 mask_size: tuple[int, int] | None = None) -> None:
        if pose.z <= 0:
            raise GeometryError(
                f"the camera is at z = {pose.z} m, at or below the ground plane z = 0 of the grid frame; the "
                "grid frame's z = 0 must be the ground (e.g. base_footprint) and the camera above it"
            )
        width, height = (camera.width, camera.height) if mask_size is None else (int(mask_size[0]),
                                                                                int(mask_size[1]))
        self.camera = camera.scaled(width, height)
        self.pose = pose
        self.spec = spec
        self.mask_size = (width, height)
        started = time.perf_counter()
        pix, gx, gy, rng = self._map_pixels()
        self.mapped_pixels = int(pix.size)
        self._build_cells(pix, gx, gy)
        self._build_columns(pix, gx, gy, rng)
        self.build_seconds = time.perf_counter() - started
        _LOG.debug(
            "ground projector %dx%d: %d pixels on the ground, %d sampled, %d cells seen, built in %.3f s",
            width, height, self.mapped_pixels, self.sampled_pixels, int(self._seen_cells.size), self.build_seconds,
        )

    # ---- construction -----------------------------------------------------------------------------------------

    def _map_pixels(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64],
                                   npt.NDArray[np.float64]]:
        width, height = self.mask_size
        rot = self.pose.rotation_matrix()
        cam = np.array([self.pose.x, self.pose.y, self.pose.z])
        rows_per_chunk = max(1, 262144 // width)
        out_pix, out_x, out_y, out_r = [], [], [], []
        us = np.arange(width, dtype=np.float64)
        for row0 in range(0, height, rows_per_chunk):
            rows = np.arange(row0, min(height, row0 + rows_per_chunk), dtype=np.float64)
            u = np.tile(us, rows.size)
            v = np.repeat(rows, width)
            xn, yn, ok = self.camera.undistort_pixels(u, v)
            dz = rot[2, 0] * xn + rot[2, 1] * yn + rot[2, 2]
            # Rays at or above the horizon never meet the ground; the tolerance keeps t finite.
            ok &= dz < -1e-12
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(ok, -cam[2] / np.where(ok, dz, -1.0), 0.0)
            dx = t * (rot[0, 0] * xn + rot[0, 1] * yn + rot[0, 2])
            dy = t * (rot[1, 0] * xn + rot[1, 1] * yn + rot[1, 2])
            r = np.hypot(dx, dy)
            ok &= r <= self.spec.max_range
            idx = np.flatnonzero(ok)
            out_pix.append(idx + row0 * width)
            out_x.append(cam[0] + dx[idx])
            out_y.append(cam[1] + dy[idx])
            out_r.append(r[idx])
        return (np.concatenate(out_pix).astype(np.int64), np.concatenate(out_x), np.concatenate(out_y),
                np.concatenate(out_r))

    def _build_cells(self, pix: npt.NDArray[np.int64], gx: npt.NDArray[np.float64],
                     gy: npt.NDArray[np.float64]) -> None:
        spec = self.spec
        i = np.floor((gx - spec.origin_x) / spec.resolution)
        j = np.floor((gy - spec.origin_y) / spec.resolution)
        inside = (i >= 0) & (i < spec.width) & (j >= 0) & (j < spec.height)
        pix = pix[inside]
        cell = (j[inside] * spec.width + i[inside]).astype(np.int64)
        n_cells = spec.width * spec.height
        # Group pixels by cell (stable: raster order within a cell) and keep every step-th one, so that a cell
        # keeps between max_pixels_per_cell / 2 and max_pixels_per_cell pixels spread over its footprint.
        order = np.argsort(cell, kind="stable")
        cell_sorted = cell[order]
        counts = np.bincount(cell_sorted, minlength=n_cells)
        starts = np.cumsum(counts) - counts
        rank = np.arange(cell_sorted.size) - starts[cell_sorted]
        cap = spec.max_pixels_per_cell
        step = (counts[cell_sorted] + cap - 1) // cap
        keep = rank % step == 0
        order, cell_sorted = order[keep], cell_sorted[keep]
        kept_counts = np.bincount(cell_sorted, minlength=n_cells)
        seen_sel = kept_counts[cell_sorted] >= spec.min_pixels
        order, cell_sorted = order[seen_sel], cell_sorted[seen_sel]
        self._pix_by_cell = pix[order]  # flat mask indices, grouped by cell
        self._seen_cells = np.flatnonzero(kept_counts >= spec.min_pixels)  # ascending == order of the groups
        self._cell_totals = kept_counts[self._seen_cells].astype(np.int64)
        self._group_ends = np.cumsum(self._cell_totals) - 1
        self._group_starts = self._group_ends - self._cell_totals + 1  # each seen cell's first sampled pixel
        self.sampled_pixels = int(self._pix_by_cell.size)

    def _build_columns(self, pix: npt.NDArray[np.int64], gx: npt.NDArray[np.float64],
                       gy: npt.NDArray[np.float64], rng: npt.NDArray[np.float64]) -> None:
        width = self.mask_size[0]
        wanted = np.unique(np.round(np.linspace(0, width - 1, min(width, self.spec.point_columns))).astype(np.int64))
        col = pix % width
        sel = np.flatnonzero(np.isin(col, wanted))
        col, pix_s, gx_s, gy_s, rng_s = col[sel], pix[sel], gx[sel], gy[sel], rng[sel]
        order = np.lexsort((rng_s, col))  # by column, then nearest first
        col, pix_s, gx_s, gy_s = col[order], pix_s[order], gx_s[order], gy_s[order]
        _, first, counts = np.unique(col, return_index=True, return_counts=True)
        length = int(counts.max()) if counts.size else 0
        n = counts.size
        slot = np.arange(col.size) - np.repeat(first, counts)
        row_of = np.repeat(np.arange(n), counts)
        # Short columns are padded with their farthest pixel: repeating it cannot move the first non-drivable
        # pixel of the column, so the per-frame search needs no validity mask.
        last = first + counts - 1
        self._col_pix = np.repeat(pix_s[last][:, None], length, axis=1)
        self._col_pix[row_of, slot] = pix_s
        self._col_xy = np.zeros((n, length, 2), np.float32)
        self._col_xy[row_of, slot, 0] = gx_s
        self._col_xy[row_of, slot, 1] = gy_s

    # ---- per frame --------------------------------------------------------------------------------------------

    def _flat(self, mask: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        arr = np.asarray(mask)
        width, height = self.mask_size
        if arr.shape != (height, width):
            raise GeometryError(
                f"mask has shape {arr.shape}, but this projector was built for {height}x{width} "
                "(height x width); get a projector for the mask size from ProjectorCache.get"
            )
        if arr.dtype == np.bool_:
            arr = arr.view(np.uint8)
        elif arr.dtype != np.uint8:
            raise GeometryError(f"mask must be uint8 (class ids or 0/255) or bool, got {arr.dtype}")
        return np.ascontiguousarray(arr).reshape(-1)

    @staticmethod
    def _codes(flat: npt.NDArray[np.uint8], index: npt.NDArray[np.int64], drivable_lut: npt.ArrayLike | None,
               unknown_lut: npt.ArrayLike | None) -> npt.NDArray[np.uint8]:
        """Per sampled pixel: :data:`_BLOCKED`, :data:`_DRIVABLE` or :data:`_UNSEEN` (``unknown_lut`` wins)."""
        table = np.full(256, _DRIVABLE, np.uint8)
        lut01 = _lut01(drivable_lut, "drivable_lut")
        if lut01 is None:
            table[0] = _BLOCKED  # a 0/255 (or bool) mask: non-zero is drivable
        else:
            table[lut01 == 0] = _BLOCKED
        unknown01 = _lut01(unknown_lut, "unknown_lut")
        if unknown01 is not None:
            table[unknown01 != 0] = _UNSEEN
        values = flat[index]
        if values.size == 0:  # OpenCV returns None for an empty array
            return values
        # OpenCV's table lookup is several times faster than numpy's fancy indexing here (same values)
        return np.asarray(cv2.LUT(values.reshape(-1, 1), table), np.uint8).reshape(values.shape)

    def grid(self, mask: npt.ArrayLike, drivable_lut: npt.ArrayLike | None = None,
             unknown_lut: npt.ArrayLike | None = None) -> npt.NDArray[np.int8]:
        """Cell values for one mask.

        Args:
            mask: ``(H, W)`` uint8 or bool at the projector's mask size. Without ``drivable_lut`` non-zero means
                drivable; with it, the mask holds class ids and ``drivable_lut[id] != 0`` means drivable
                (``LabelSet.mask_lut`` gives such a table).
            drivable_lut: optional ``(256,)`` table.
            unknown_lut: optional ``(256,)`` table of class ids that say nothing about the ground (non-zero: e.g.
                the void class, which covers the ego vehicle's hood in Cityscapes): such pixels count neither as
                drivable nor as non-drivable, as if the cell had not seen them. Needs a class-id mask.

        Returns:
            ``(spec.height, spec.width) int8``: 0 all counted pixels drivable, 100 none, the rounded percentage of
            non-drivable pixels in between, -1 for cells with fewer than ``min_pixels`` counted pixels.
        """
        flat = self._flat(mask)
        codes = self._codes(flat, self._pix_by_cell, drivable_lut, unknown_lut)
        out = np.full(self.spec.width * self.spec.height, _UNKNOWN, np.int8)
        if self._seen_cells.size:
            starts = self._group_starts
            free = np.add.reduceat((codes == _DRIVABLE).view(np.uint8), starts, dtype=np.int64)
            counted = self._cell_totals
            cells = self._seen_cells
            if unknown_lut is not None:
                counted = counted - np.add.reduceat((codes == _UNSEEN).view(np.uint8), starts, dtype=np.int64)
                ok = counted >= self.spec.min_pixels
                counted, free, cells = counted[ok], free[ok], cells[ok]
            out[cells] = (200 * (counted - free) + counted) // (2 * counted)
        return out.reshape(self.spec.height, self.spec.width)

    def obstacle_points(self, mask: npt.ArrayLike, drivable_lut: npt.ArrayLike | None = None,
                        unknown_lut: npt.ArrayLike | None = None) -> npt.NDArray[np.float32]:
        """Ground points where non-drivable area begins along each sampled image column (the drivable boundary).

        Walking each column from the nearest ground pixel outwards (up to ``max_range``), the first non-drivable
        pixel gives one point; columns that stay drivable give none. Pixels of ``unknown_lut`` classes (see
        :meth:`grid`) are walked over: they neither end the column nor count as drivable. Returns ``(N, 3)
        float32`` grid-frame points with ``z = 0``.
        """
        flat = self._flat(mask)
        out = np.zeros((0, 3), np.float32)
        if self._col_pix.size == 0:
            return out
        blocked = self._codes(flat, self._col_pix, drivable_lut, unknown_lut) == _BLOCKED
        first = blocked.argmax(axis=1)
        rows = np.arange(blocked.shape[0])
        hit = blocked[rows, first]
        xy = self._col_xy[rows[hit], first[hit]]
        out = np.zeros((xy.shape[0], 3), np.float32)
        out[:, :2] = xy
        return out

    def project(self, mask: npt.ArrayLike, drivable_lut: npt.ArrayLike | None = None,
                unknown_lut: npt.ArrayLike | None = None) -> GroundResult:
        """:meth:`grid` and :meth:`obstacle_points` of one mask together."""
        return GroundResult(self.grid(mask, drivable_lut, unknown_lut),
                            self.obstacle_points(mask, drivable_lut, unknown_lut))

    # ---- introspection ----------------------------------------------------------------------------------------

    def seen_cells(self) -> npt.NDArray[np.bool_]:
        """``(spec.height, spec.width) bool``: cells that get a value (not -1) from every mask."""
        out = np.zeros(self.spec.width * self.spec.height, np.bool_)
        out[self._seen_cells] = True
        return out.reshape(self.spec.shape)

    def ground_pixels(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Flat mask index and grid-frame ``x``, ``y`` of every pixel that maps to the ground (recomputed)."""
        pix, gx, gy, _ = self._map_pixels()
        return pix, gx, gy


class ProjectorCache:
    """Least-recently-used :class:`GroundProjector` objects, keyed by (camera, pose, spec, mask size).

    The pose part of the key is rounded to micrometres / microradians (:meth:`CameraPose.key`), so a pose
    re-read from TF with float noise reuses the projector. Thread-safe.
    """

    def __init__(self, maxsize: int = 4) -> None:
        if maxsize < 1:
            raise GeometryError(f"ProjectorCache maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[Any, ...], GroundProjector] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, camera: CameraModel, pose: CameraPose, spec: GridSpec,
            mask_size: tuple[int, int] | None = None) -> GroundProjector:
        """The projector for masks of ``mask_size`` = ``(width, height)`` (default: the camera's size)."""
        size = (camera.width, camera.height) if mask_size is None else (int(mask_size[0]), int(mask_size[1]))
        key = (camera, pose.key(), spec, size)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
            projector = GroundProjector(camera, pose, spec, size)
            _LOG.info("built the ground mapping for %dx%d masks in %.2f s (%d pixels on the ground, %d cells seen)",
                      size[0], size[1], projector.build_seconds, projector.mapped_pixels,
                      int(projector.seen_cells().sum()))
            self._items[key] = projector
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            return projector

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drop every projector."""
        with self._lock:
            self._items.clear()


# --------------------------------------------------------------------------------------------------------------
# Rendering and benchmark
# --------------------------------------------------------------------------------------------------------------


def render_grid(grid: npt.ArrayLike, *, style: Literal["color", "gray"] = "color",
                orientation: Literal["forward_up", "map"] = "forward_up", scale: int = 1) -> npt.NDArray[np.uint8]:
    """Draw an occupancy grid as a ``(h, w, 3) uint8 BGR`` picture.

    Args:
        grid: ``(height, width) int8`` values as returned by :meth:`GroundProjector.grid`.
        style: ``"color"`` blends green (free) to red (occupied) over dark grey unknown; ``"gray"`` follows
            map_server (free white, occupied black, unknown grey 205).
        orientation: ``"forward_up"`` puts +x of the grid frame up and +y left (what a forward camera sees from
            above); ``"map"`` puts +y up and +x right, as map_server saves maps.
        scale: integer magnification (nearest neighbour).
    """
    g = np.asarray(grid)
    if g.ndim != 2 or g.dtype != np.int8:
        raise GeometryError(f"grid must be a 2-D int8 array, got shape {g.shape} and dtype {g.dtype}")
    if style not in ("color", "gray") or orientation not in ("forward_up", "map") or int(scale) < 1:
        raise GeometryError(
            f"render_grid: style must be 'color' or 'gray', orientation 'forward_up' or 'map', scale >= 1; got "
            f"{style!r}, {orientation!r}, {scale!r}"
        )
    values = g.astype(np.int16)
    unknown = values < 0
    share = np.clip(values, 0, 100).astype(np.float32) / 100.0
    if style == "gray":
        level = np.round(254.0 * (1.0 - share)).astype(np.uint8)
        level[unknown] = 205
        image = np.repeat(level[:, :, None], 3, axis=2)
    else:
        free_bgr = np.array([60, 200, 60], np.float32)
        occupied_bgr = np.array([40, 40, 230], np.float32)
        image = np.round(free_bgr * (1.0 - share[:, :, None]) + occupied_bgr * share[:, :, None]).astype(np.uint8)
        image[unknown] = (64, 64, 64)
    image = image.transpose(1, 0, 2)[::-1, ::-1] if orientation == "forward_up" else image[::-1]
    image = np.ascontiguousarray(image)
    if int(scale) > 1:
        image = np.ascontiguousarray(np.repeat(np.repeat(image, int(scale), axis=0), int(scale), axis=1))
    return image


def benchmark_grid(mask_width: int = 2048, mask_height: int = 1024, resolution: float = 0.1,
                   max_range: float = 20.0, repeats: int = 50) -> dict[str, Any]:
    """Time the mask-to-grid step for a synthetic wide-angle camera; returns timing statistics.

    The camera: horizontal field of view about 90 degrees (``fx = fy = mask_width / 2``), mild ``plumb_bob``
    distortion, 1.5 m above the ground, pitched 10 degrees down; the mask holds random class ids with a drivable
    table and, as the node by default, a table of unknown classes (19, Cityscapes' void), so both class-id lookups
    are included. ``first_ms`` is building the projector plus the first grid;
    ``median_ms`` / ``p95_ms`` / ``min_ms`` are the following ``repeats`` grids; ``points_median_ms`` times
    :meth:`GroundProjector.obstacle_points` on the same mask.
    """
    if repeats < 1:
        raise GeometryError(f"repeats must be >= 1, got {repeats}")
    f = mask_width / 2.0
    camera = CameraModel(width=mask_width, height=mask_height,
                         k=(f, 0.0, (mask_width - 1) / 2, 0.0, f, (mask_height - 1) / 2, 0.0, 0.0, 1.0),
                         d=(-0.05, 0.01, 0.0, 0.0, 0.0), distortion_model="plumb_bob")
    pose = CameraPose.from_body_rpy(0.3, 0.0, 1.5, pitch=math.radians(10.0))
    spec = GridSpec.from_range(max_range, resolution)
    rng = np.random.default_rng(0)
    class_ids = rng.integers(0, 20, size=(mask_height, mask_width), dtype=np.uint8)
    lut, void = np.zeros(256, np.uint8), np.zeros(256, np.uint8)
    lut[[0, 1]] = 255
    void[19] = 255
    started = time.perf_counter()
    projector = GroundProjector(camera, pose, spec, (mask_width, mask_height))
    grid = projector.grid(class_ids, lut, void)
    first = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        projector.grid(class_ids, lut, void)
        times.append(time.perf_counter() - t0)
    point_times = []
    for _ in range(max(1, repeats // 5)):
        t0 = time.perf_counter()
        projector.obstacle_points(class_ids, lut, void)
        point_times.append(time.perf_counter() - t0)
    ordered = sorted(times)
    return {
        "mask_size": [mask_width, mask_height],
        "resolution": resolution,
        "max_range": max_range,
        "grid_cells": [spec.width, spec.height],
        "repeats": repeats,
        "first_ms": first * 1e3,
        "build_ms": projector.build_seconds * 1e3,
        "median_ms": statistics.median(times) * 1e3,
        "p95_ms": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)] * 1e3,
        "min_ms": ordered[0] * 1e3,
        "points_median_ms": statistics.median(point_times) * 1e3,
        "mapped_pixels": projector.mapped_pixels,
        "sampled_pixels": projector.sampled_pixels,
        "seen_cells": int((grid >= 0).sum()),
    }
