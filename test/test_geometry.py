"""Tests of espnet_ros.core.geometry: lens models, poses, grid layout and masks projected onto the ground.

The synthetic scenes are built independently of the code under test: a drivable layout is drawn on a fine ground
raster, its outlines are projected into the image with OpenCV's forward model (``cv2.projectPoints`` /
``cv2.fisheye.projectPoints``) and filled, and the grid that comes back is compared with the area fractions of
the same raster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.geometry import (
    CameraModel,
    CameraPose,
    GeometryError,
    GridSpec,
    GroundProjector,
    ProjectorCache,
    benchmark_grid,
    render_grid,
)

W, H = 1280, 720


def _k(f: float, w: int = W, h: int = H) -> tuple[float, ...]:
    return (f, 0.0, (w - 1) / 2, 0.0, f, (h - 1) / 2, 0.0, 0.0, 1.0)


CAMERAS = {
    "pinhole": CameraModel(W, H, _k(700.0), (), "none"),
    "plumb_bob": CameraModel(W, H, _k(700.0), (-0.28, 0.08, 0.0005, -0.0004, 0.0), "plumb_bob"),
    "rational_polynomial": CameraModel(
        W, H, _k(700.0), (0.6, -0.02, 0.0005, -0.0003, 0.0, 0.95, 0.05, 0.0), "rational_polynomial"
    ),
    "equidistant": CameraModel(W, H, _k(450.0), (0.05, -0.01, 0.002, -0.0005), "equidistant"),
}
POSE = CameraPose.from_body_rpy(0.2, 0.1, 1.4, roll=0.02, pitch=math.radians(12.0), yaw=math.radians(5.0))
SPEC = GridSpec.from_range(15.0, 0.1, min_pixels=3)


# ----------------------------------------------------------------------------------------------------------------
# Independent forward model
# ----------------------------------------------------------------------------------------------------------------


def _project(camera: CameraModel, pose: CameraPose, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Grid-frame points (N, 3) to pixels (N, 2) with OpenCV's forward projection."""
    rot = pose.rotation_matrix()
    r_cw = rot.T
    tvec = -r_cw @ np.array([pose.x, pose.y, pose.z])
    rvec, _ = cv2.Rodrigues(r_cw)
    obj = points.reshape(-1, 1, 3).astype(np.float64)
    if camera.distortion_model == "equidistant":
        img, _ = cv2.fisheye.projectPoints(obj, rvec, tvec, camera.matrix, camera.dist_coeffs)
    else:
        img, _ = cv2.projectPoints(obj, rvec, tvec, camera.matrix, camera.dist_coeffs)
    return np.asarray(img, np.float64).reshape(-1, 2)


def _cone_half_angle(camera: CameraModel) -> float:
    """Largest angle from the optical axis that lands in the image (forward model only), plus a margin."""
    theta = np.radians(np.arange(0.0, 89.95, 0.05))
    phi = np.radians(np.arange(0.0, 360.0, 0.5))
    t, p = np.meshgrid(theta, phi)
    rays = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 1, 3)
    if camera.distortion_model == "equidistant":
        px, _ = cv2.fisheye.projectPoints(rays, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    else:
        px, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    px = np.asarray(px).reshape((*t.shape, 2))
    # Only angles before the lens model folds back (image radius stops growing) are seen by the image.
    radius = np.hypot(px[..., 0] - camera.k[2], px[..., 1] - camera.k[5])
    unfolded = np.concatenate([np.ones((t.shape[0], 1), bool), np.diff(radius, axis=1) > 0], axis=1)
    unfolded = np.logical_and.accumulate(unfolded, axis=1)
    inside = unfolded & (px[..., 0] > -1) & (px[..., 0] < W) & (px[..., 1] > -1) & (px[..., 1] < H)
    cone = float(t[inside].max()) + math.radians(4.0)
    limit = float(np.where(unfolded, t, 0.0).max(axis=1).min())  # smallest fold angle over the azimuths
    return min(cone, limit, math.radians(89.9))


@dataclass
class Scene:
    camera: CameraModel
    pose: CameraPose
    mask: npt.NDArray[np.uint8]  # (H, W) 255 drivable, 0 not
    drivable: npt.NDArray[np.uint8]  # ground raster, 1 drivable
    x0: float  # ground raster: centre of pixel (0, 0)
    y0: float
    res: float
    cone: float


def _drivable_layout(gx: npt.NDArray[np.float64], gy: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """A curving road with an obstacle on it and a separate drivable patch."""
    centre = 0.1 + 0.012 * (gx - 2.0) ** 2 - 0.05 * gx
    road = (np.abs(gy - centre) < 2.6) & (gx > -3.0)
    obstacle = (gx >= 7.0) & (gx <= 8.5) & (gy >= -0.6) & (gy <= 1.2)
    patch = (gx >= 4.0) & (gx <= 6.5) & (gy >= -8.0) & (gy <= -5.0)
    return (road & ~obstacle) | patch


def render_scene(camera: CameraModel, pose: CameraPose, far: float = 22.0, res: float = 0.02) -> Scene:
    """Render the drivable layout into a mask with the forward model; beyond ``far`` and above it: drivable."""
    n = round(2 * far / res)
    x0, y0 = pose.x - far, pose.y - far
    gx, gy = np.meshgrid(x0 + np.arange(n) * res, y0 + np.arange(n) * res)
    drivable = _drivable_layout(gx, gy).astype(np.uint8)
    # Ground that the forward model may be used on: inside a cone a little wider than the image, within `far`.
    cone = _cone_half_angle(camera)
    axis = pose.rotation_matrix()[:, 2]
    rel = np.stack([gx - pose.x, gy - pose.y, np.full_like(gx, -pose.z)], axis=-1)
    cos_angle = (rel @ axis) / np.linalg.norm(rel, axis=-1)
    region = ((cos_angle > math.cos(cone)) & (np.hypot(gx - pose.x, gy - pose.y) < far)).astype(np.uint8)
    del rel, cos_angle

    def polygons(binary: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.int32]]:
        contours, _ = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        out = []
        for c in contours:
            c = c.reshape(-1, 2).astype(np.float64)
            ground = np.stack([x0 + c[:, 0] * res, y0 + c[:, 1] * res, np.zeros(len(c))], axis=-1)
            px = _project(camera, pose, ground)
            out.append(np.round(px * 16).astype(np.int32).reshape(-1, 1, 2))
        return out

    mask = np.full((H, W), 255, np.uint8)  # sky and far ground: drivable, so any leak would show
    cv2.fillPoly(mask, polygons(region), 0, lineType=cv2.LINE_8, shift=4)
    cv2.fillPoly(mask, polygons(drivable & region), 255, lineType=cv2.LINE_8, shift=4)
    return Scene(camera, pose, mask, drivable, x0, y0, res, cone)


def expected_free_share(scene: Scene, spec: GridSpec) -> npt.NDArray[np.float64]:
    """Drivable area fraction of every grid cell, from the ground raster."""
    sub = round(spec.resolution / scene.res)
    out = np.zeros(spec.shape)
    i0 = round((spec.origin_x + scene.res / 2 - scene.x0) / scene.res)
    j0 = round((spec.origin_y + scene.res / 2 - scene.y0) / scene.res)
    n = scene.drivable.shape[0]
    for j in range(spec.height):
        rj = j0 + j * sub
        if rj < 0 or rj + sub > n:
            continue
        row = scene.drivable[rj:rj + sub]
        cols = i0 + np.arange(spec.width) * sub
        ok = (cols >= 0) & (cols + sub <= n)
        blocks = row[:, cols[ok, None] + np.arange(sub)[None, :]]  # (sub, k, sub)
        out[j, ok] = blocks.mean(axis=(0, 2))
    return out


def cell_visibility(scene: Scene, spec: GridSpec, samples: int = 5) -> tuple[npt.NDArray[np.bool_],
                                                                              npt.NDArray[np.bool_]]:
    """Cells with any sub-sample near the image (3 px margin), and with all sub-samples well inside it (1 px)."""
    offs = (np.arange(samples) + 0.5) / samples * spec.resolution
    any_in = np.zeros(spec.shape, np.bool_)
    all_in = np.ones(spec.shape, np.bool_)
    axis = scene.pose.rotation_matrix()[:, 2]
    for ox in offs:
        for oy in offs:
            gx = spec.origin_x + np.arange(spec.width)[None, :] * spec.resolution + ox + np.zeros(spec.shape)
            gy = spec.origin_y + np.arange(spec.height)[:, None] * spec.resolution + oy + np.zeros(spec.shape)
            rel = np.stack([gx - scene.pose.x, gy - scene.pose.y, np.full(spec.shape, -scene.pose.z)], -1)
            in_cone = (rel @ axis) / np.linalg.norm(rel, axis=-1) > math.cos(scene.cone - math.radians(2.0))
            in_range = np.hypot(gx - scene.pose.x, gy - scene.pose.y) <= spec.max_range
            sel = in_cone & in_range
            px = _project(scene.camera, scene.pose, np.stack([gx[sel], gy[sel], np.zeros(sel.sum())], -1))
            for margin, out in ((3.0, any_in), (-1.0, all_in)):
                inside = np.zeros(spec.shape, np.bool_)
                lo_u, hi_u, lo_v, hi_v = -0.5 - margin, W - 0.5 + margin, -0.5 - margin, H - 0.5 + margin
                inside[sel] = (px[:, 0] > lo_u) & (px[:, 0] < hi_u) & (px[:, 1] > lo_v) & (px[:, 1] < hi_v)
                if out is any_in:
                    any_in |= inside
                else:
                    all_in &= inside
    return any_in, all_in


# ----------------------------------------------------------------------------------------------------------------
# Lens models
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_distort_matches_opencv_forward_model(name: str) -> None:
    camera = CAMERAS[name]
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(-0.9, 0.9, 500), rng.uniform(-0.5, 0.5, 500), np.ones(500)], -1)
    if camera.distortion_model == "equidistant":
        ref, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.matrix,
                                           camera.dist_coeffs)
    else:
        ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    xd, yd = camera.distort(pts[:, 0], pts[:, 1])
    mine = np.stack([camera.k[0] * xd + camera.k[2], camera.k[4] * yd + camera.k[5]], -1)
    np.testing.assert_allclose(mine, np.asarray(ref).reshape(-1, 2), atol=1e-6)


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_undistort_pixels_inverts_opencv_projection(name: str) -> None:
    camera = CAMERAS[name]
    v, u = np.mgrid[0:H:7, 0:W:7].astype(np.float64)
    x, y, ok = camera.undistort_pixels(u.ravel(), v.ravel())
    assert ok.all(), f"{(~ok).sum()} pixels could not be undistorted"
    obj = np.stack([x, y, np.ones_like(x)], -1).reshape(-1, 1, 3)
    if camera.distortion_model == "equidistant":
        back, _ = cv2.fisheye.projectPoints(obj, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    else:
        back, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    err = np.hypot(*(np.asarray(back).reshape(-1, 2) - np.stack([u.ravel(), v.ravel()], -1)).T)
    assert err.max() < 1e-3


def test_undistortion_is_refined_where_opencv_iteration_fails() -> None:
    # A wide rational_polynomial lens (invertible over the whole image) on which OpenCV's fixed-point iteration
    # alone misses by more than 0.01 px for about a tenth of the pixels.
    camera = CameraModel(2048, 1024, _k(700.0, 2048, 1024), (2.0, 0.8, 0.0005, -0.0003, 0.02, 2.3, 1.3, 0.15),
                         "rational_polynomial")
    v, u = np.mgrid[0:1024:5, 0:2048:5].astype(np.float64)
    src = np.stack([u.ravel(), v.ravel()], -1)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12)
    plain = cv2.undistortPoints(src.reshape(-1, 1, 2), camera.matrix, camera.dist_coeffs, criteria=crit)
    plain_back, _ = cv2.projectPoints(np.c_[plain.reshape(-1, 2), np.ones(len(src))], np.zeros(3), np.zeros(3),
                                      camera.matrix, camera.dist_coeffs)
    assert (np.hypot(*(plain_back.reshape(-1, 2) - src).T) > 0.01).mean() > 0.05
    x, y, ok = camera.undistort_pixels(u.ravel(), v.ravel())
    assert ok.all()
    back, _ = cv2.projectPoints(np.stack([x, y, np.ones_like(x)], -1), np.zeros(3), np.zeros(3), camera.matrix,
                                camera.dist_coeffs)
    assert np.hypot(*(back.reshape(-1, 2) - src).T).max() < 0.01


def test_folded_lens_model_marks_pixels_invalid_instead_of_guessing() -> None:
    # k1 so negative that the radial mapping turns back inside the image: those pixels must map to nothing.
    camera = CameraModel(W, H, _k(500.0), (-0.6, 0.0, 0.0, 0.0, 0.0), "plumb_bob")
    v, u = np.mgrid[0:H:9, 0:W:9].astype(np.float64)
    x, y, ok = camera.undistort_pixels(u.ravel(), v.ravel())
    assert 0 < ok.sum() < ok.size
    assert np.hypot(x[ok], y[ok]).max() < math.sqrt(1 / (3 * 0.6))  # where d(r_d)/dr = 0


def test_scaled_camera_follows_resize_pixel_centres() -> None:
    camera = CAMERAS["plumb_bob"]
    small = camera.scaled(640, 360)
    assert (small.width, small.height) == (640, 360)
    pts = np.array([[0.3, -0.2, 1.0], [-0.5, 0.25, 1.0]])
    big_px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), camera.matrix, camera.dist_coeffs)
    small_px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), small.matrix, small.dist_coeffs)
    np.testing.assert_allclose(np.asarray(small_px).reshape(-1, 2),
                               (np.asarray(big_px).reshape(-1, 2) + 0.5) * 0.5 - 0.5, atol=1e-9)
    assert camera.scaled(W, H) is camera


def test_camera_info_fields_roi_and_binning() -> None:
    full = CameraModel.from_camera_info_fields(1280, 720, np.array(_k(700.0)).reshape(3, 3), [0.1, 0, 0, 0, 0],
                                               "plumb_bob")
    assert full.k == _k(700.0) and full.d == (0.1, 0.0, 0.0, 0.0, 0.0)
    part = CameraModel.from_camera_info_fields(1280, 720, _k(700.0), [], "plumb_bob", binning_x=2, binning_y=2,
                                               roi=(100, 50, 800, 600))
    assert (part.width, part.height) == (400, 300)
    assert part.k[0] == 350.0 and part.k[2] == pytest.approx((639.5 - 100) / 2)
    assert part.k[5] == pytest.approx((359.5 - 50) / 2)
    # An all-zero D means no distortion whatever the model says.
    assert CameraModel.from_camera_info_fields(1280, 720, _k(700.0), [0.0] * 5, "plumb_bob").d == ()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": (0.0,) * 9}, "uncalibrated"),
        ({"distortion_model": "kannala_brandt"}, "not supported"),
        ({"d": (0.1, 0.2, 0.3)}, "takes 4 or 5"),
        ({"distortion_model": "", "d": (0.1, 0, 0, 0, 0)}, "non-zero"),
        ({"width": 0}, "width"),
        ({"k": (700.0, 0.0, 640.0, 0.0, -700.0, 360.0, 0.0, 0.0, 1.0)}, "fx, fy > 0"),
    ],
)
def test_bad_camera_models_are_rejected_with_actionable_errors(kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"width": W, "height": H, "k": _k(700.0), "d": (), "distortion_model": "plumb_bob"}
    args.update(kwargs)
    with pytest.raises(GeometryError, match=fragment) as info:
        CameraModel(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, EspnetRosError)


# ----------------------------------------------------------------------------------------------------------------
# Poses and grid layout
# ----------------------------------------------------------------------------------------------------------------


def test_body_pose_gives_the_optical_frame_convention() -> None:
    level = CameraPose.from_body_rpy(1.0, 2.0, 1.5)
    assert (level.roll, level.pitch, level.yaw) == pytest.approx((-math.pi / 2, 0.0, -math.pi / 2))
    rot = level.rotation_matrix()
    np.testing.assert_allclose(rot[:, 2], [1, 0, 0], atol=1e-12)  # optical z: forward
    np.testing.assert_allclose(rot[:, 0], [0, -1, 0], atol=1e-12)  # optical x: right
    np.testing.assert_allclose(rot[:, 1], [0, 0, -1], atol=1e-12)  # optical y: down
    np.testing.assert_allclose(level.quaternion(), (-0.5, 0.5, -0.5, 0.5), atol=1e-12)
    down = CameraPose.from_body_rpy(0, 0, 1.5, pitch=0.3).rotation_matrix()[:, 2]
    np.testing.assert_allclose(down, [math.cos(0.3), 0, -math.sin(0.3)], atol=1e-12)
    left = CameraPose.from_body_rpy(0, 0, 1.5, yaw=0.4).rotation_matrix()[:, 2]
    np.testing.assert_allclose(left, [math.cos(0.4), math.sin(0.4), 0], atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_pose_round_trips_through_matrix_and_quaternion(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y, roll, pitch, yaw = (float(v) for v in rng.uniform(-3, 3, 5))
    pose = CameraPose(x, y, float(rng.uniform(0.2, 3)), roll, pitch, yaw)
    for other in (CameraPose.from_matrix(pose.matrix()),
                  CameraPose.from_translation_quaternion((pose.x, pose.y, pose.z), pose.quaternion())):
        np.testing.assert_allclose(other.matrix(), pose.matrix(), atol=1e-12)
        assert other.key() == pose.key()
    q = np.array(pose.quaternion())
    assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)


def test_pose_rejects_non_rotations_and_cameras_below_ground() -> None:
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(GeometryError, match="rotation"):
        CameraPose.from_matrix(bad)
    with pytest.raises(GeometryError, match="quaternion"):
        CameraPose.from_translation_quaternion((0, 0, 1), (0, 0, 0, 0))
    with pytest.raises(GeometryError, match="below the ground"):
        GroundProjector(CAMERAS["pinhole"], CameraPose.from_body_rpy(0, 0, -0.1), SPEC)


def test_grid_spec_from_range_and_validation() -> None:
    spec = GridSpec.from_range(20.0, 0.1)
    assert (spec.width, spec.height, spec.origin_x, spec.origin_y) == (400, 400, pytest.approx(-20.0),
                                                                        pytest.approx(-20.0))
    assert spec.shape == (400, 400)
    gx, gy = spec.cell_centers()
    assert gx[0, 0] == pytest.approx(-19.95) and gy[-1, 0] == pytest.approx(19.95)
    for bad in ({"resolution": 0.0}, {"width": 0}, {"min_pixels": 40, "max_pixels_per_cell": 32},
                {"max_range": -1.0}, {"width": 100000, "height": 100000}):
        with pytest.raises(GeometryError):
            GridSpec(**bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# Synthetic scenes through the whole mapping
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CAMERAS))
def scene_and_grid(request: pytest.FixtureRequest) -> tuple[Scene, GroundProjector, npt.NDArray[np.int8]]:
    camera = CAMERAS[request.param]
    scene = render_scene(camera, POSE)
    projector = GroundProjector(camera, POSE, SPEC)
    return scene, projector, projector.grid(scene.mask)


def test_observed_cells_get_the_right_value(scene_and_grid: tuple[Scene, GroundProjector,
                                                                  npt.NDArray[np.int8]]) -> None:
    scene, _, grid = scene_and_grid
    share = expected_free_share(scene, SPEC)
    observed = grid >= 0
    expected = np.round(100 * (1 - share))
    pure = (share == 0) | (share == 1)
    right = np.where(pure, grid == expected, np.abs(grid - expected) <= 25)
    rate = right[observed].mean()
    assert observed.sum() > 5000
    assert rate >= 0.98, f"only {rate:.4f} of {observed.sum()} observed cells are right"
    # Drivable, obstacle and off-road cells all appear, with the values they should have.
    assert grid[SPEC.height // 2 + 5, int((7.6 - SPEC.origin_x) / 0.1)] == 100  # obstacle at x=7.6, y=0.55
    assert grid[SPEC.height // 2, int((5.0 - SPEC.origin_x) / 0.1)] == 0  # road at x=5, y=0.05


def test_cells_outside_the_view_are_unknown(scene_and_grid: tuple[Scene, GroundProjector,
                                                                 npt.NDArray[np.int8]]) -> None:
    scene, projector, grid = scene_and_grid
    any_in, all_in = cell_visibility(scene, SPEC)
    assert (grid[~any_in] == -1).all(), f"{(grid[~any_in] != -1).sum()} cells outside the view have values"
    np.testing.assert_array_equal(grid >= 0, projector.seen_cells())
    # Cells fully in view within 8 m (where every camera here gives them several pixels) are observed.
    gx, gy = SPEC.cell_centers()
    near = all_in & (np.hypot(gx - POSE.x, gy - POSE.y) < 8.0)
    assert (grid[near] >= 0).mean() > 0.97


def test_nothing_beyond_range_or_above_the_horizon_lands(scene_and_grid: tuple[Scene, GroundProjector,
                                                                              npt.NDArray[np.int8]]) -> None:
    scene, projector, grid = scene_and_grid
    pix, gx, gy = projector.ground_pixels()
    assert np.hypot(gx - POSE.x, gy - POSE.y).max() <= SPEC.max_range + 1e-9
    # The forward model marks sky and ground beyond 22 m as drivable: none of it may reach the grid, so cells
    # near the range limit in the view that the raster calls non-drivable must read occupied, not free.
    share = expected_free_share(scene, SPEC)
    gxc, gyc = SPEC.cell_centers()
    far = (np.hypot(gxc - POSE.x, gyc - POSE.y) > SPEC.max_range - 1.0) & (share == 0) & (grid >= 0)
    assert far.sum() > 50
    assert (grid[far] == 100).mean() > 0.98
    # All mask pixels with a ground point are pixels whose ray goes down.
    rot = POSE.rotation_matrix()
    x, y, _ = scene.camera.undistort_pixels((pix % W).astype(np.float64), (pix // W).astype(np.float64))
    assert (rot[2, 0] * x + rot[2, 1] * y + rot[2, 2] < 0).all()


def test_horizon_row_of_a_level_pinhole_camera() -> None:
    camera = CameraModel.pinhole(640, 480, 500.0, 500.0, 319.5, 239.5)
    pitch = math.radians(8.0)
    pose = CameraPose.from_body_rpy(0.0, 0.0, 1.2, pitch=pitch)
    spec = GridSpec(resolution=0.5, width=400, height=400, origin_x=-100.0, origin_y=-100.0, min_pixels=1,
                    max_range=1000.0)
    projector = GroundProjector(camera, pose, spec)
    pix, _, _ = projector.ground_pixels()
    horizon = 239.5 - 500.0 * math.tan(pitch)  # rows at or above this look at or above the horizon
    rows = pix // 640
    assert rows.min() > horizon
    assert rows.min() <= math.floor(horizon) + 2  # and rows just below it do reach the ground
    sky = np.zeros((480, 640), np.uint8)
    sky[: math.floor(horizon) + 1] = 255  # drivable above the horizon, non-drivable below
    grid = projector.grid(sky)
    assert grid.max() == 100 and ((grid == -1) | (grid == 100)).all()


def test_obstacle_points_follow_the_drivable_boundary(scene_and_grid: tuple[Scene, GroundProjector,
                                                                           npt.NDArray[np.int8]]) -> None:
    scene, projector, _ = scene_and_grid
    points = projector.obstacle_points(scene.mask)
    assert points.dtype == np.float32 and points.shape[1] == 3 and len(points) > 300
    assert (points[:, 2] == 0).all()
    assert np.hypot(points[:, 0] - POSE.x, points[:, 1] - POSE.y).max() <= SPEC.max_range + 1e-4
    # Every point lies on non-drivable ground of the raster, up to a few centimetres.
    blocked = (scene.drivable == 0).astype(np.uint8)
    dist_to_blocked = cv2.distanceTransform(1 - blocked, cv2.DIST_L2, 5) * scene.res
    ci = np.round((points[:, 0] - scene.x0) / scene.res).astype(int)
    ri = np.round((points[:, 1] - scene.y0) / scene.res).astype(int)
    assert np.percentile(dist_to_blocked[ri, ci], 99) <= 0.05
    # The near face of the obstacle (x = 7, -0.6 <= y <= 1.2) is traced across its width.
    face = points[(np.abs(points[:, 0] - 7.0) < 0.12) & (points[:, 1] > -0.6) & (points[:, 1] < 1.2)]
    bins = np.unique(np.floor((face[:, 1] + 0.6) / 0.2))
    assert len(bins) >= 8


def test_class_ids_with_a_drivable_table_match_a_binary_mask() -> None:
    camera = CAMERAS["plumb_bob"]
    scene = render_scene(camera, POSE)
    rng = np.random.default_rng(3)
    ids = np.where(scene.mask > 0, rng.choice([0, 1], size=scene.mask.shape), rng.choice([2, 13, 19],
                   size=scene.mask.shape)).astype(np.uint8)
    lut = np.zeros(256, np.uint8)
    lut[[0, 1]] = 255
    projector = GroundProjector(camera, POSE, SPEC)
    np.testing.assert_array_equal(projector.grid(ids, lut), projector.grid(scene.mask))
    np.testing.assert_array_equal(projector.grid(ids, lut), projector.grid(scene.mask > 0))
    np.testing.assert_array_equal(projector.obstacle_points(ids, lut), projector.obstacle_points(scene.mask))
    result = projector.project(ids, lut)
    np.testing.assert_array_equal(result.grid, projector.grid(scene.mask))
    with pytest.raises(GeometryError, match="shape"):
        projector.grid(scene.mask[:, :-1])
    with pytest.raises(GeometryError, match="uint8"):
        projector.grid(scene.mask.astype(np.float32))
    with pytest.raises(GeometryError, match="256"):
        projector.grid(ids, lut[:20])


def test_masks_at_another_resolution_use_the_scaled_camera() -> None:
    camera = CAMERAS["pinhole"]
    scene = render_scene(camera, POSE)
    half = cv2.resize(scene.mask, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
    full_grid = GroundProjector(camera, POSE, SPEC).grid(scene.mask)
    half_grid = GroundProjector(camera, POSE, SPEC, (W // 2, H // 2)).grid(half)
    both = (full_grid >= 0) & (half_grid >= 0)
    assert both.sum() > 3000
    assert (np.abs(full_grid[both].astype(int) - half_grid[both]) <= 50).mean() > 0.97


# A 200x100 pinhole camera 2 m up looking straight down on an 8x8 grid of 0.5 m cells: about 100 pixels per cell,
# every one of them sampled (max_pixels_per_cell 255), so cell values can be checked against a plain count.
DOWN_CAMERA = CameraModel.pinhole(200, 100, 40.0, 40.0, 99.5, 49.5)
DOWN_POSE = CameraPose(0.0, 0.0, 2.0, roll=math.pi, pitch=0.0, yaw=-math.pi / 2)
DOWN_SPEC = GridSpec(resolution=0.5, width=8, height=8, origin_x=-2.0, origin_y=-2.0, min_pixels=3,
                     max_range=10.0, max_pixels_per_cell=255)


def cell_values(projector: GroundProjector, mask: npt.NDArray[np.uint8]
                ) -> Iterator[tuple[int, int, npt.NDArray[np.uint8]]]:
    """``(j, i, mask values of the cell's pixels)`` for every cell of ``DOWN_SPEC``, counted independently."""
    spec = DOWN_SPEC
    pix, gx, gy = projector.ground_pixels()
    i = np.floor((gx - spec.origin_x) / spec.resolution).astype(int)
    j = np.floor((gy - spec.origin_y) / spec.resolution).astype(int)
    inside = (i >= 0) & (i < spec.width) & (j >= 0) & (j < spec.height)
    flat = mask.reshape(-1)
    for jj in range(spec.height):
        for ii in range(spec.width):
            yield jj, ii, flat[pix[inside & (i == ii) & (j == jj)]]


def test_shares_are_rounded_percentages_and_min_pixels_applies() -> None:
    projector = GroundProjector(DOWN_CAMERA, DOWN_POSE, DOWN_SPEC)
    rng = np.random.default_rng(0)
    mask = (rng.random((100, 200)) < 0.3).astype(np.uint8)
    grid = projector.grid(mask)
    for jj, ii, values in cell_values(projector, mask):
        if values.size < 3:
            assert grid[jj, ii] == -1
            continue
        blocked = (values == 0).mean()
        assert grid[jj, ii] == math.floor(100 * blocked + 0.5)


def test_unknown_classes_count_neither_way_in_cells_and_columns() -> None:
    projector = GroundProjector(DOWN_CAMERA, DOWN_POSE, DOWN_SPEC)
    rng = np.random.default_rng(1)
    ids = rng.choice(np.array([0, 2, 19], np.uint8), size=(100, 200), p=[0.4, 0.3, 0.3])
    ids[:, 80:120] = 19  # a band seen only as void (like a hood): those cells must become unknown
    drivable, void = np.zeros(256, np.uint8), np.zeros(256, np.uint8)
    drivable[0], void[19] = 255, 255
    grid = projector.grid(ids, drivable, void)
    unknown_cells = 0
    for jj, ii, values in cell_values(projector, ids):
        counted = values[values != 19]
        if counted.size < 3:
            assert grid[jj, ii] == -1
            unknown_cells += values.size >= 3  # seen, but only (or nearly only) void
            continue
        assert grid[jj, ii] == math.floor(100 * (counted != 0).mean() + 0.5)
    assert unknown_cells >= 8  # the void band
    # without the table void is non-drivable, as before
    np.testing.assert_array_equal(projector.grid(ids, drivable, None), projector.grid((ids == 0).view(np.uint8)))
    assert (projector.grid(ids, drivable)[grid == -1] >= 0).sum() >= 8
    # columns walk over void: the first non-drivable pixel after it ends them, as if void were road
    np.testing.assert_array_equal(projector.obstacle_points(ids, drivable, void),
                                  projector.obstacle_points(np.where(ids == 19, 0, ids).astype(np.uint8), drivable))
    only_void = np.full((100, 200), 19, np.uint8)  # and a void-only view gives no point
    assert projector.obstacle_points(only_void, drivable, void).shape == (0, 3)
    assert projector.obstacle_points(only_void, drivable).shape[0] > 0
    with pytest.raises(GeometryError, match="unknown_lut must have shape"):
        projector.grid(ids, drivable, void[:10])
    # a camera that sees no ground at all: every cell unknown, no points, with or without the tables
    sky = GroundProjector(DOWN_CAMERA, CameraPose(0.0, 0.0, 2.0, roll=0.0, pitch=0.0, yaw=0.0), DOWN_SPEC)
    assert (sky.grid(ids, drivable, void) == -1).all() and (sky.grid(ids) == -1).all()
    assert sky.obstacle_points(ids, drivable, void).shape == (0, 3)


# ----------------------------------------------------------------------------------------------------------------
# Cache, rendering, benchmark
# ----------------------------------------------------------------------------------------------------------------


def test_projector_cache_reuses_and_evicts() -> None:
    camera = CameraModel.pinhole(320, 180, 200.0, 200.0, 159.5, 89.5)
    pose = CameraPose.from_body_rpy(0, 0, 1.0, pitch=0.2)
    spec = GridSpec.from_range(8.0, 0.2)
    cache = ProjectorCache(maxsize=2)
    first = cache.get(camera, pose, spec)
    assert cache.get(camera, pose, spec) is first
    noisy = CameraPose(pose.x + 1e-9, pose.y, pose.z, pose.roll, pose.pitch - 1e-10, pose.yaw)
    assert cache.get(camera, noisy, spec) is first
    assert (cache.hits, cache.misses) == (2, 1)
    other_size = cache.get(camera, pose, spec, (160, 90))
    assert other_size is not first and other_size.camera == camera.scaled(160, 90)
    cache.get(camera, CameraPose.from_body_rpy(0, 0, 1.0, pitch=0.25), spec)
    assert len(cache) == 2 and cache.misses == 3
    assert cache.get(camera, pose, spec) is not first  # evicted (least recently used)
    cache.clear()
    assert len(cache) == 0


def test_render_grid_orientation_and_styles() -> None:
    grid = np.full((4, 6), -1, np.int8)  # 6 cells along x, 4 along y
    grid[0, 5] = 0  # largest x, smallest y
    grid[3, 0] = 100  # smallest x, largest y
    img = render_grid(grid)
    assert img.shape == (6, 4, 3) and img.dtype == np.uint8
    assert tuple(img[0, 3]) == (60, 200, 60)  # forward (x) up, left (y) to the left: top right is free
    assert tuple(img[5, 0]) == (40, 40, 230)  # bottom left is occupied
    assert tuple(img[2, 2]) == (64, 64, 64)
    gray = render_grid(grid, style="gray", orientation="map", scale=2)
    assert gray.shape == (8, 12, 3)
    assert gray[7, 11, 0] == 254 and gray[0, 0, 0] == 0 and gray[3, 3, 0] == 205  # +y up, +x right
    with pytest.raises(GeometryError):
        render_grid(grid.astype(np.int16))


def test_benchmark_grid_reports_timings() -> None:
    stats = benchmark_grid(mask_width=320, mask_height=160, resolution=0.2, max_range=10.0, repeats=3)
    for key in ("first_ms", "median_ms", "p95_ms", "min_ms", "points_median_ms", "sampled_pixels"):
        assert stats[key] > 0
    assert stats["grid_cells"] == [100, 100]


def test_equidistant_without_coefficients_is_still_a_fisheye_projection() -> None:
    camera = CameraModel(W, H, _k(450.0), (), "equidistant")
    assert camera.d == (0.0, 0.0, 0.0, 0.0)
    x, _, ok = camera.undistort_pixels(np.array([639.5 + 450.0]), np.array([359.5]))
    assert ok.all() and x[0] == pytest.approx(math.tan(1.0))  # r_d = theta = 1 rad
