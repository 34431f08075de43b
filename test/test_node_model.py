"""The node runs a model trained here (``model:=``): labels, colours and drivable classes come from its manifest.

A 5-class model is trained in the test on four downscaled CamVid frames whose labels are colour PNGs in the class
file's palette (a handful of batches: well under a minute), then loaded by a real node on a fresh rclpy Context.
A tampered weights file or manifest makes the executable exit 1 with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from node_harness import Harness, labels_listener, textured
from rclpy.context import Context

from espnet_ros.core.classes import load_class_file
from espnet_ros.core.modelfile import MANIFEST_FILE, WEIGHTS_FILE
from espnet_ros.core.train import RECIPES, TrainConfig, train
from espnet_ros.image_codec import encode_image
from espnet_ros.segmentation_node import main

LOT = """
name: parking_lot
classes:
  - {id: 0, name: sky, color: [70, 130, 180], init_from: Sky}
  - {id: 1, name: lane, color: [250, 0, 250], drivable: true, init_from: Road}
  - {id: 2, name: walkway, color: [244, 35, 232], drivable: true, init_from: Pavement}
  - {id: 3, name: vehicle, color: [0, 0, 142], init_from: Car}
  - {id: 4, name: other, color: [1, 2, 3], void: true, init_from: Unlabelled}
"""
CAMVID_TO_LOT = np.array([0, 4, 4, 1, 2, 4, 4, 4, 3, 4, 4, 4], np.uint8)


@pytest.fixture(scope="module")
def trained(shared_dir: Path, weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the parking-lot model on 4 frames (colour label PNGs) for 2 batches; return its model folder."""
    root = tmp_path_factory.mktemp("lot")
    (root / "lot.yaml").write_text(LOT)
    classes = load_class_file(root / "lot.yaml")
    palette = np.asarray([c.color_rgb for c in classes.classes], np.uint8)
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    src = shared_dir / "camvid" / "train"
    for path in sorted((src / "images").glob("*.png"))[:4]:
        img = cv2.resize(cv2.imread(str(path)), (120, 90), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(cv2.imread(str(src / "labels" / path.name), cv2.IMREAD_UNCHANGED), (120, 90),
                         interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(images / path.name), img)
        cv2.imwrite(str(labels / path.name), palette[CAMVID_TO_LOT[lab]][:, :, ::-1])  # RGB → BGR on disk
    cfg = TrainConfig(images=images, labels=labels, classes=classes, out=root / "run", init="camvid",
                      recipe=RECIPES["quick"], epochs=1, max_batches=2, network_size=(96, 72), batch_size=2,
                      num_threads=1, weights_dir=weights_dir, name="parking-lot")
    return train(cfg).best


def as_array(msg: object) -> np.ndarray:
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]  # type: ignore[attr-defined]
    arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels)  # type: ignore[attr-defined]
    return arr[:, :, 0] if channels == 1 else arr


def test_node_runs_the_trained_model_with_the_manifest_labels(ros_context: Context, trained: Path) -> None:
    manifest = json.loads((trained / MANIFEST_FILE).read_text())
    h = Harness(ros_context, {"model": str(trained), "backend": "fused"},
                subscribe=("class_mask", "color_mask", "drivable_mask"))
    try:
        assert h.node.labels.names == ("sky", "lane", "walkway", "vehicle", "other")
        assert h.node.config.drivable_ids == (1, 2)  # the manifest's drivable classes, not the preset's road
        labels = labels_listener(h)
        h.wait_connected()
        frame = textured(90, 120, seed=4)
        h.send("/image", encode_image(frame, "bgr8", h.header()))
        assert h.spin_until(lambda: all(len(h.on(0, o)) == 1 for o in ("class_mask", "color_mask", "drivable_mask"))
                            and len(labels) >= 1)
        ids = as_array(h.on(0, "class_mask")[-1])
        assert ids.shape == (90, 120) and int(ids.max()) <= 4
        palette = np.asarray([c["color"] for c in manifest["classes"]["classes"]], np.uint8)
        np.testing.assert_array_equal(as_array(h.on(0, "color_mask")[-1]), palette[ids])
        np.testing.assert_array_equal(as_array(h.on(0, "drivable_mask")[-1]), np.isin(ids, (1, 2)) * 255)
        doc = json.loads(labels[-1].data)
        assert doc["preset"] == "parking-lot" and doc["label_set"] == "parking_lot" and doc["ignore_id"] == 4
        assert doc["drivable_ids"] == [1, 2]
        assert [(c["name"], c["color_rgb"]) for c in doc["classes"]] == [
            (c["name"], c["color"]) for c in manifest["classes"]["classes"]]
    finally:
        h.close()


@pytest.mark.parametrize("part", ["weights", "manifest"])
def test_tampered_model_makes_the_node_exit_with_one_line(
    ros_env: int, trained: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], part: str
) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    for f in (WEIGHTS_FILE, MANIFEST_FILE):
        (copy / f).write_bytes((trained / f).read_bytes())
    if part == "weights":
        data = bytearray((copy / WEIGHTS_FILE).read_bytes())
        data[-30] ^= 0x55
        (copy / WEIGHTS_FILE).write_bytes(bytes(data))
        words = "has been modified or corrupted"
    else:
        doc = json.loads((copy / MANIFEST_FILE).read_text())
        doc["classes"]["classes"][3]["drivable"] = True
        (copy / MANIFEST_FILE).write_text(json.dumps(doc))
        words = "was modified after it was written"
    capfd.readouterr()
    rc = main(["--ros-args", "-p", f"model:={copy}", "-p", "device:=cpu"])
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1, lines
    assert "cannot start" in lines[0] and words in lines[0] and "restore the model folder" in lines[0]
