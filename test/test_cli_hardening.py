"""A bad input costs the command line only itself: skipped with one line, the rest written, a non-zero exit.

Corrupt images, broken videos and decompression bombs among good files; label maps of another aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from bombs import jpeg_bomb, png_bomb

from espnet_ros.cli import main

OUTPUTS = ("labels.png", "color.png", "overlay.jpg", "drivable.png")


def _small_frames(shared_dir: Path, n: int) -> list[tuple[str, np.ndarray]]:
    files = sorted((shared_dir / "camvid" / "val" / "images").iterdir())[:n]
    return [(f.stem, cv2.resize(cv2.imread(str(f), cv2.IMREAD_COLOR), (120, 90), interpolation=cv2.INTER_AREA))
            for f in files]


def _written_stems(out: Path) -> set[str]:
    return {p.name.split(".")[0] for p in out.iterdir()}


def test_a_folder_of_good_corrupt_and_bomb_files_writes_every_good_one(
    shared_dir: Path, weights_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    (_, img_a), (_, img_b) = _small_frames(shared_dir, 2)
    cv2.imwrite(str(folder / "1_good.png"), img_a)
    _, png = cv2.imencode(".png", img_b)
    (folder / "2_corrupt.png").write_bytes(png.tobytes()[:200] + bytes(300))  # valid header, broken data
    (folder / "3_bomb.png").write_bytes(png_bomb())
    (folder / "4_bomb.jpg").write_bytes(jpeg_bomb())
    cv2.imwrite(str(folder / "5_good.png"), img_b)
    out = tmp_path / "out"
    rc = main(["-q", "segment", str(folder), "--preset", "camvid", "--out", str(out), "--weights-dir",
               str(weights_dir)])
    err = capfd.readouterr().err
    assert rc == 1
    assert _written_stems(out) == {"1_good", "5_good"}
    lines = err.splitlines()
    assert [line for line in lines if "2_corrupt.png" in line and line.startswith("espnet-ros: skipped: ")]
    assert [line for line in lines if "3_bomb.png" in line and "declares 30000x30000" in line]
    assert [line for line in lines if "4_bomb.jpg" in line and "declares 30000x30000" in line]
    assert len(lines) == 4, err  # three skipped files and the summary: no library noise
    assert "libpng" not in err.split("2_corrupt.png")[0]


def test_a_broken_video_does_not_stop_the_good_image(shared_dir: Path, weights_dir: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    (stem, img), = _small_frames(shared_dir, 1)
    image = tmp_path / f"{stem}.png"
    cv2.imwrite(str(image), img)
    video = tmp_path / "broken.avi"
    video.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(range(256)) * 4)
    out = tmp_path / "out"
    rc = main(["-q", "segment", str(video), str(image), str(tmp_path / "missing.png"), "--preset", "camvid",
               "--out", str(out), "--weights-dir", str(weights_dir)])
    err = capfd.readouterr().err
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}.{o}" for o in OUTPUTS)
    skipped = [line for line in err.splitlines() if line.startswith("espnet-ros: skipped: ")]
    assert len(skipped) == 2 and "broken.avi" in skipped[1] and "missing.png" in skipped[0], err


def test_eval_refuses_label_maps_of_another_aspect_ratio(shared_dir: Path, weights_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    source = sorted((shared_dir / "camvid" / "val" / "images").iterdir())[0]
    (images / "f.png").write_bytes(source.read_bytes())  # 480x360
    cv2.imwrite(str(labels / "f.png"), np.zeros((7, 5), np.uint8))
    rc = main(["-q", "eval", "--preset", "camvid", "--images", str(images), "--labels", str(labels),
               "--weights-dir", str(weights_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and str(labels / "f.png") in err and "5x7 but its image is 480x360" in err
    cv2.imwrite(str(labels / "f.png"), np.zeros((180, 240), np.uint8))  # half size: an exact scale, accepted
    assert main(["-q", "eval", "--preset", "camvid", "--images", str(images), "--labels", str(labels),
                 "--weights-dir", str(weights_dir)]) == 0
