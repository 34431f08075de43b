"""Tests of espnet_ros.core.evaluate: hand-computed confusion matrices under both protocols, and the real CamVid
validation numbers of FACTS.md through ``espnet-ros eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from espnet_ros.cli import main
from espnet_ros.core.errors import EspnetRosError
from espnet_ros.core.evaluate import ConfusionMatrix, EvalError, EvalResult, compute_metrics, find_pairs
from espnet_ros.core.labels import CAMVID, LabelSet

# Three classes, the last one "void" (ignore id 2).
TOY = LabelSet(name="toy", names=("a", "b", "void"), colors_rgb=((1, 1, 1), (2, 2, 2), (0, 0, 0)), ignore_id=2,
               default_drivable=(0,))


def toy_matrix() -> ConfusionMatrix:
    """labels 0 0 0 1 1 2 2 2 255, predictions 0 0 1 1 0 0 2 1 1, in three updates (the 255 pixel is skipped).

    Rows are ground truth: gt 0 → pred (2, 1, 0); gt 1 → (1, 1, 0); gt 2 → (1, 1, 1).
    """
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, 0, 1, 1]], np.uint8))
    cm.update(np.array([[1, 2, 2]], np.uint8), np.array([[0, 0, 2]], np.uint8))
    cm.update(np.array([[2, 255]], np.uint8), np.array([[1, 1]], np.uint8))
    return cm


def test_confusion_matrix_by_hand() -> None:
    cm = toy_matrix()
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0], [1, 1, 0], [1, 1, 1]])
    assert cm.num_images == 3
    assert cm.skipped_pixels == 1


def test_upstream_protocol_by_hand() -> None:
    r = toy_matrix().result(TOY, "upstream")
    # class a: TP 2, GT 3, PRED 2+1+1 = 4 (the void pixel predicted as a counts) → 2 / (3 + 4 - 2) = 40 %
    # class b: TP 1, GT 2, PRED 1+1+1 = 3 → 1 / (2 + 3 - 1) = 25 %
    assert r.per_class_iou == {"a": pytest.approx(40.0), "b": pytest.approx(25.0)}
    assert r.miou == pytest.approx(32.5)
    assert r.pixel_acc == pytest.approx(60.0)  # (2 + 1) / (3 + 2) labelled pixels
    assert r.class_avg_acc == pytest.approx((2 / 3 + 1 / 2) / 2 * 100)
    assert r.protocol == "upstream" and r.num_images == 3
    assert "void" not in r.per_class_iou


def test_standard_protocol_by_hand() -> None:
    r = toy_matrix().result(TOY, "standard")
    # void row dropped: class a PRED 2+1 = 3 → 2 / (3 + 3 - 2) = 50 %; class b PRED 1+1 = 2 → 1 / (2 + 2 - 1)
    assert r.per_class_iou == {"a": pytest.approx(50.0), "b": pytest.approx(100 / 3)}
    assert r.miou == pytest.approx((50.0 + 100 / 3) / 2)
    assert r.pixel_acc == pytest.approx(60.0)
    assert r.class_avg_acc == pytest.approx((2 / 3 + 1 / 2) / 2 * 100)
    assert r.protocol == "standard"


def test_absent_class_is_nan_and_skipped() -> None:
    # class b never appears in labels nor predictions
    r = compute_metrics(np.array([[3, 0, 1], [0, 0, 0], [0, 0, 5]]), ("a", "b", "void"), 2, "standard", 1)
    assert r.per_class_iou["a"] == pytest.approx(75.0)
    assert math.isnan(r.per_class_iou["b"])
    assert r.miou == pytest.approx(75.0)
    assert r.to_dict()["per_class_iou"] == {"a": 75.0, "b": None}
    assert isinstance(r, EvalResult)
    with pytest.raises(AttributeError):
        r.miou = 1.0  # type: ignore[misc]


def test_update_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(EvalError, match="predict at the labels' size"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(EvalError, match=r"0\.\.2"):
        cm.update(np.zeros((1, 2), np.uint8), np.array([[0, 3]], np.uint8))
    with pytest.raises(ValueError, match="protocol"):
        compute_metrics(cm.matrix, TOY.names, 2, "pascal")  # type: ignore[arg-type]
    assert issubclass(EvalError, EspnetRosError)


def test_find_pairs(tmp_path: Path) -> None:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    tile = np.zeros((4, 4), np.uint8)
    for name in ("b", "a"):
        cv2.imwrite(str(images / f"{name}.png"), tile)
        cv2.imwrite(str(labels / f"{name}.png"), tile)
    assert [p[0].name for p in find_pairs(images, labels)] == ["a.png", "b.png"]
    cv2.imwrite(str(images / "c.png"), tile)
    with pytest.raises(EvalError, match=r"1 image\(s\) without a label map \(e.g. c: .*c.png\)"):
        find_pairs(images, labels)
    with pytest.raises(EvalError, match="does not exist"):
        find_pairs(tmp_path / "nope", labels)


@pytest.fixture(scope="module")
def camvid_eval(shared_dir: Path, weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``espnet-ros eval --preset camvid`` on the 101 validation frames (upstream protocol), as JSON."""
    out = tmp_path_factory.mktemp("eval") / "camvid.json"
    val = shared_dir / "camvid" / "val"
    rc = main(["-q", "eval", "--preset", "camvid", "--images", str(val / "images"), "--labels", str(val / "labels"),
               "--weights-dir", str(weights_dir), "--json", str(out)])
    assert rc == 0
    doc: dict[str, object] = json.loads(out.read_text())
    return doc


def test_camvid_val_upstream_protocol(camvid_eval: dict[str, object]) -> None:
    doc = camvid_eval
    assert doc["protocol"] == "upstream" and doc["num_images"] == 101 and doc["preset"] == "camvid"
    assert doc["miou"] == pytest.approx(68.68, abs=0.05)
    assert doc["pixel_acc"] == pytest.approx(92.68, abs=0.05)
    assert doc["class_avg_acc"] == pytest.approx(79.71, abs=0.05)
    per_class = doc["per_class_iou"]
    assert isinstance(per_class, dict)
    expected = {"Sky": 94.29, "Building": 84.20, "Pole": 11.92, "Road": 96.62, "Pavement": 86.25, "Tree": 90.17,
                "SignSymbol": 40.08, "Fence": 65.83, "Car": 77.82, "Pedestrian": 38.80, "Bicyclist": 69.50}
    assert per_class == {k: pytest.approx(v, abs=0.05) for k, v in expected.items()}


def test_camvid_val_standard_protocol(camvid_eval: dict[str, object]) -> None:
    # the standard protocol from the same confusion matrix the command wrote
    confusion = np.array(camvid_eval["confusion"], np.int64)
    assert confusion.shape == (12, 12)
    assert confusion.sum() == 101 * 480 * 360
    r = compute_metrics(confusion, CAMVID.names, CAMVID.ignore_id, "standard", 101)
    assert r.miou == pytest.approx(70.10, abs=0.05)
    assert r.pixel_acc == pytest.approx(92.68, abs=0.05)
    upstream = compute_metrics(confusion, CAMVID.names, CAMVID.ignore_id, "upstream", 101)
    assert upstream.miou == pytest.approx(camvid_eval["miou"], abs=1e-3)


def test_eval_prints_table(shared_dir: Path, weights_dir: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    # three frames, standard protocol, no JSON: the table is printed
    val = shared_dir / "camvid" / "val"
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for src in sorted((val / "images").iterdir())[:3]:
        (images / src.name).write_bytes(src.read_bytes())
        (labels / src.name).write_bytes((val / "labels" / src.name).read_bytes())
    rc = main(["-q", "eval", "--preset", "camvid", "--images", str(images), "--labels", str(labels),
               "--protocol", "standard", "--weights-dir", str(weights_dir)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "camvid on 3 images, standard protocol" in out
    assert "Road" in out and "mIoU" in out and "class-average accuracy" in out


def test_eval_mismatched_folders_exit_2(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["eval", "--preset", "camvid", "--images", str(shared_dir / "camvid" / "val" / "images"),
               "--labels", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("espnet-ros: error: labels folder") and "Traceback" not in err
