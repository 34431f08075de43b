"""Tests of the ``espnet-ros`` command line through ``main([...])``: segmenting reproduces the upstream label maps for
all 6 Cityscapes presets, folders and videos, the presets table, downloads from a ``file://`` mirror, and one-line
errors with exit status 2."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from espnet_ros.cli import main
from espnet_ros.core.labels import CAMVID, CITYSCAPES
from espnet_ros.core.weights import PRESETS, SAMPLES

# preset → prefix of its label maps in shared/espnet/reference (made by the unmodified upstream script)
REFERENCE_PREFIX = {
    "cityscapes": "espnet_p2q8",
    "cityscapes-p2q5": "espnet_p2q5",
    "cityscapes-p2q3": "espnet_p2q3",
    "cityscapes-c-p2q8": "espnetc_p2q8",
    "cityscapes-c-p2q5": "espnetc_p2q5",
    "cityscapes-c-p2q3": "espnetc_p2q3",
}
OUTPUTS = ("labels.png", "color.png", "overlay.jpg", "drivable.png")


def imread(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> NDArray[np.uint8]:
    image = cv2.imread(str(path), flags)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, np.uint8)


@pytest.mark.parametrize("preset", list(REFERENCE_PREFIX))
def test_segment_reproduces_upstream_reference(
    preset: str, samples_dir: Path, weights_dir: Path, shared_dir: Path, tmp_path: Path
) -> None:
    rc = main(["-q", "segment", str(samples_dir), "--preset", preset, "--output-size", "network",
               "--out", str(tmp_path), "--weights-dir", str(weights_dir), "--drivable-classes", "road,sidewalk"])
    assert rc == 0
    stems = sorted(p.stem for p in samples_dir.glob("*.png"))
    assert len(stems) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.{o}" for s in stems for o in OUTPUTS)
    for stem in stems:
        labels = imread(tmp_path / f"{stem}.labels.png")
        reference = imread(shared_dir / "espnet" / "reference" /
                           f"{REFERENCE_PREFIX[preset]}_{stem.removesuffix('_leftImg8bit')}_trainid.png")
        assert labels.shape == reference.shape == (512, 1024) and labels.dtype == np.uint8
        agreement = float((labels == reference).mean())
        assert agreement >= 0.999, f"{preset} {stem}: {agreement:.5f}"
        # the other products are consistent with the label map
        np.testing.assert_array_equal(imread(tmp_path / f"{stem}.color.png"), CITYSCAPES.palette_bgr()[labels])
        np.testing.assert_array_equal(imread(tmp_path / f"{stem}.drivable.png"),
                                      np.where(labels <= 1, 255, 0).astype(np.uint8))
        assert imread(tmp_path / f"{stem}.overlay.jpg", cv2.IMREAD_COLOR).shape == (512, 1024, 3)


def write_video(path: Path, frames: list[NDArray[np.uint8]]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (width, height))
    assert writer.isOpened(), "this OpenCV cannot write MJPG into .avi"
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_segment_video_and_folder_at_input_size(shared_dir: Path, weights_dir: Path, tmp_path: Path) -> None:
    files = sorted((shared_dir / "camvid" / "val" / "images").iterdir())[:3]
    frames = [np.asarray(cv2.resize(imread(f, cv2.IMREAD_COLOR), (240, 180), interpolation=cv2.INTER_AREA), np.uint8)
              for f in files]
    write_video(tmp_path / "drive.avi", frames)
    folder = tmp_path / "stills"
    folder.mkdir()
    for f, frame in zip(files[:2], frames[:2], strict=True):
        cv2.imwrite(str(folder / f.name), frame)
    out = tmp_path / "out"
    rc = main(["-q", "segment", str(tmp_path / "drive.avi"), str(folder), "--preset", "camvid", "--out", str(out),
               "--weights-dir", str(weights_dir)])
    assert rc == 0
    stems = [f"drive_{i:06d}" for i in range(3)] + [f.stem for f in files[:2]]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{o}" for s in stems for o in OUTPUTS)
    for stem in stems:
        labels = imread(out / f"{stem}.labels.png")
        assert labels.shape == (180, 240) and int(labels.max()) < CAMVID.num_classes  # the input's size
        road = labels == 3
        assert road.mean() > 0.1  # CamVid frames are street scenes
        np.testing.assert_array_equal(imread(out / f"{stem}.drivable.png") > 0, road)  # default drivable: Road
    # the still image and the video frame of the same picture agree closely (MJPG is lossy)
    a, b = imread(out / "drive_000000.labels.png"), imread(out / f"{files[0].stem}.labels.png")
    assert (a == b).mean() > 0.9


def test_presets_table(weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "--weights-dir", str(weights_dir)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        row = rows[name]
        assert f"{preset.num_params:,}" in row and preset.file in row and "ok (sha256 verified)" in row
        assert f"{preset.input_size[0]}x{preset.input_size[1]}" in row
        assert f" {preset.label_set.num_classes} " in row
    assert f"weights folder: {weights_dir}" in out
    # an empty folder: everything missing; a damaged file: flagged
    (tmp_path / "decoder").mkdir()
    (tmp_path / "decoder" / "espnet_p_2_q_8.pth").write_bytes(b"not weights")
    assert main(["presets", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("missing") == 6 and out.count("INVALID") == 1


@pytest.fixture
def mirror(weights_dir: Path, samples_dir: Path, tmp_path: Path) -> Path:
    """A copy of the upstream repository layout (pretrained/..., test/data/...) to download from."""
    root = tmp_path / "mirror"
    for preset in PRESETS.values():
        dest = root / preset.data.upstream_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights_dir / preset.file, dest)
    for sample in SAMPLES:
        dest = root / sample.upstream_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(samples_dir / sample.file, dest)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_weights_from_file_url(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target, samples = tmp_path / "weights", tmp_path / "samples"
    argv = ["-q", "download-weights", "camvid", "cityscapes", "--samples", "--weights-dir", str(target),
            "--samples-dir", str(samples), "--url-base", mirror.as_uri()]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("camvid", "cityscapes"):
        assert sha256(target / PRESETS[name].file) == PRESETS[name].sha256
    for sample in SAMPLES:
        assert sha256(samples / sample.file) == sample.sha256
    assert sorted(p.name for p in (target / "decoder").iterdir()) == ["espnet_p_2_q_8.pth", "espnet_p_2_q_8_camvid.pth"]
    assert out.count(": downloaded") == 4
    # a second run finds everything present and verified
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("already present, verified") == 4 and "downloaded" not in out
    # --all fetches the other five, and the weights work
    assert main(["-q", "download-weights", "--all", "--weights-dir", str(target), "--url-base", mirror.as_uri()]) == 0
    out = capsys.readouterr().out
    assert out.count(": downloaded") == 5 and out.count("already present") == 2
    assert main(["presets", "--weights-dir", str(target)]) == 0
    assert capsys.readouterr().out.count("ok (sha256 verified)") == 7


def test_download_errors(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (mirror / PRESETS["camvid"].data.upstream_path).unlink()
    rc = main(["-q", "download-weights", "camvid", "--weights-dir", str(tmp_path / "w"), "--url-base", mirror.as_uri()])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("espnet-ros: error: cannot download file://") and "Traceback" not in err
    assert not (tmp_path / "w" / PRESETS["camvid"].file).exists()
    # a mirror serving a different file: refused by the hash check
    shutil.copyfile(mirror / PRESETS["cityscapes"].data.upstream_path, mirror / PRESETS["camvid"].data.upstream_path)
    rc = main(["-q", "download-weights", "camvid", "--weights-dir", str(tmp_path / "w"), "--url-base", mirror.as_uri()])
    err = capsys.readouterr().err
    assert rc == 2 and "sha256" in err
    assert main(["download-weights", "camvid", "--all"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["download-weights", "nope", "--weights-dir", str(tmp_path)]) == 2
    assert "unknown weights preset 'nope'" in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(
    samples_dir: Path, weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*argv: str) -> str:
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("espnet-ros: error: ") and "Traceback" not in err
        return err

    sample = str(next(samples_dir.glob("*.png")))
    err = run("segment", sample, "--preset", "nope", "--out", str(tmp_path), "--weights-dir", str(weights_dir))
    assert "unknown weights preset 'nope'; known presets: cityscapes" in err
    err = run("segment", sample, "--out", str(tmp_path), "--weights-dir", str(tmp_path / "empty"))
    assert "not found" in err and "`espnet-ros download-weights cityscapes`" in err
    err = run("segment", sample, "--out", str(tmp_path), "--weights-dir", str(weights_dir), "--drivable-classes",
              "road,runway")
    assert "unknown class 'runway'" in err
    err = run("segment", str(tmp_path / "missing.png"), "--out", str(tmp_path), "--weights-dir", str(weights_dir))
    assert "does not exist" in err
    err = run("eval", "--preset", "camvid", "--images", str(tmp_path / "no"), "--labels", str(tmp_path))
    assert "does not exist" in err
    err = run("segment", sample, "--out", str(tmp_path), "--device", "cuda:99", "--weights-dir", str(weights_dir))
    assert "cuda:99" in err
    assert list(tmp_path.iterdir()) == []  # nothing written on errors
    # usage errors are argparse's (exit 2 too)
    assert main(["segment", sample]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["presets", "--bogus"]) == 2
    assert main(["--help"]) == 0


def test_bench_is_delegated(capsys: pytest.CaptureFixture[str]) -> None:
    from espnet_ros import bench

    assert callable(bench.main)
    assert main(["bench", "--help"]) == 0
    assert "usage" in capsys.readouterr().out.lower()
