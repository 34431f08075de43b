"""``espnet-ros segment --grid``: the bird's-eye ``<stem>.grid.png`` beside the other outputs, its documented camera
defaults (fx = fy = frame width, centred principal point, 1.5 m up, level), the camera and grid options, and one-line
errors for bad values."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from espnet_ros.cli import main
from espnet_ros.core.geometry import CameraModel, CameraPose, GridSpec, GroundProjector, render_grid
from espnet_ros.core.labels import CITYSCAPES

PRESET = "cityscapes-c-p2q3"
UNKNOWN_BGR = (64, 64, 64)


def imread(path: Path) -> NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, np.uint8)


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> Path:
    """A Cityscapes sample frame at 1024x512: road ahead, the ego car's bonnet at the bottom."""
    image = cv2.imread(str(samples_dir / "frankfurt_000000_000294_leftImg8bit.png"), cv2.IMREAD_COLOR)
    assert image is not None
    path = tmp_path_factory.mktemp("frames") / "street.png"
    cv2.imwrite(str(path), cv2.resize(image, (1024, 512), interpolation=cv2.INTER_AREA))
    return path


def expected_picture(drivable: NDArray[np.uint8], camera: CameraModel, pose: CameraPose,
                     spec: GridSpec) -> NDArray[np.uint8]:
    """The picture of ``--grid-void obstacle``: every non-drivable pixel of the 0/255 mask counts."""
    grid = GroundProjector(camera, pose, spec, (drivable.shape[1], drivable.shape[0])).grid(drivable)
    return render_grid(grid)


def expected_picture_void_unknown(labels: NDArray[np.uint8], camera: CameraModel, pose: CameraPose,
                                  spec: GridSpec) -> NDArray[np.uint8]:
    """The picture of the default ``--grid-void unknown``: void pixels (the bonnet) count neither way."""
    projector = GroundProjector(camera, pose, spec, (labels.shape[1], labels.shape[0]))
    return render_grid(projector.grid(labels, CITYSCAPES.mask_lut(CITYSCAPES.default_drivable),
                                      CITYSCAPES.mask_lut([CITYSCAPES.ignore_id])))


def test_grid_png_with_the_documented_defaults(street: Path, weights_dir: Path, tmp_path: Path) -> None:
    rc = main(["-q", "segment", str(street), "--preset", PRESET, "--out", str(tmp_path), "--weights-dir",
               str(weights_dir), "--grid"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"street.{o}" for o in ("labels.png", "color.png", "overlay.jpg", "drivable.png", "grid.png"))
    picture = imread(tmp_path / "street.grid.png")
    assert picture.shape == (400, 400, 3)  # 20 m each way at 0.1 m, one pixel per cell
    drivable, labels = imread(tmp_path / "street.drivable.png"), imread(tmp_path / "street.labels.png")
    camera = CameraModel.pinhole(1024, 512, 1024.0, 1024.0, 511.5, 255.5)
    pose = CameraPose.from_body_rpy(0.0, 0.0, 1.5)
    np.testing.assert_array_equal(picture, expected_picture_void_unknown(labels, camera, pose, GridSpec()))
    # the bonnet (void) no longer paints occupied cells just ahead of the camera: they are unknown instead
    as_obstacle = expected_picture(drivable, camera, pose, GridSpec())
    changed = (picture != as_obstacle).any(axis=2)
    assert changed.sum() > 50 and (picture[changed] == UNKNOWN_BGR).all(axis=1).mean() > 0.5
    # Forward is up, the grid origin (the camera) in the middle: behind it nothing is seen, ahead the road is free.
    unknown = (picture == UNKNOWN_BGR).all(axis=2)
    assert unknown[200:].all()
    ahead = picture[60:120, 190:210].reshape(-1, 3).astype(int)  # x from 8 to 14 m, |y| < 1 m
    free = (ahead[:, 1] > 150) & (ahead[:, 2] < 100)  # green: (60, 200, 60) BGR for a fully drivable cell
    assert free.mean() > 0.8, free.mean()


def test_grid_options_set_the_camera_and_the_grid(street: Path, weights_dir: Path, tmp_path: Path) -> None:
    rc = main(["-q", "segment", str(street), "--preset", PRESET, "--out", str(tmp_path), "--weights-dir",
               str(weights_dir), "--output-size", "network", "--grid", "--camera-intrinsics", "900,880,500,250",
               "--camera-mount=-0.5,0.2,2.0,0,0.12,0.05", "--grid-resolution", "0.25", "--grid-range", "15",
               "--grid-void", "obstacle"])
    assert rc == 0
    picture = imread(tmp_path / "street.grid.png")
    assert picture.shape == (120, 120, 3)
    drivable = imread(tmp_path / "street.drivable.png")
    camera = CameraModel.pinhole(1024, 512, 900.0, 880.0, 500.0, 250.0)
    pose = CameraPose.from_body_rpy(-0.5, 0.2, 2.0, 0.0, 0.12, 0.05)
    np.testing.assert_array_equal(picture, expected_picture(drivable, camera, pose, GridSpec.from_range(15.0, 0.25)))
    assert not (picture == UNKNOWN_BGR).all(axis=2).all()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--camera-mount", "0,0,1,0,0,0"], ["--camera-mount", "add --grid"]),
        (["--grid", "--camera-intrinsics", "900,900"], ["--camera-intrinsics", "FX,FY,CX,CY"]),
        (["--grid", "--camera-intrinsics", "0,900,500,250"], ["FX and FY must be > 0"]),
        (["--grid", "--camera-mount", "0,0,x,0,0,0"], ["X,Y,Z,ROLL,PITCH,YAW"]),
        (["--grid", "--camera-mount", "0,0,0,0,0,0"], ["Z is the camera's height"]),
        (["--grid", "--grid-range", "400", "--grid-resolution", "0.01"], ["coarser resolution"]),
    ],
)
def test_bad_grid_options_are_one_line_errors(street: Path, tmp_path: Path, args: list[str], words: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["-q", "segment", str(street), "--out", str(tmp_path), "--weights-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("espnet-ros: error:") and len(err.strip().splitlines()) == 1
    for w in words:
        assert w in err
    assert list(tmp_path.iterdir()) == []  # checked before any weights are loaded or files written
