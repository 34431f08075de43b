"""``espnet-ros export``: ONNX Runtime's labels equal PyTorch's on a CamVid frame, with and without preprocessing and
argmax in the graph; the manifest's metadata travels in the ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from espnet_ros.cli import main
from espnet_ros.core.classes import load_class_file
from espnet_ros.core.export import check_onnx, export_onnx
from espnet_ros.core.modelfile import ModelManifest, load_model, save_model
from espnet_ros.core.weights import CAMVID_PREPROCESSING, build_model, get_preset

onnx = pytest.importorskip("onnx", reason="export needs the onnx extra (pip install .[onnxruntime])")
pytest.importorskip("onnxruntime", reason="export needs the onnx extra (pip install .[onnxruntime])")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def camvid_model(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CamVid preset's network saved as a model file (the format `espnet-ros train` writes)."""
    folder = tmp_path_factory.mktemp("models") / "camvid-copy"
    manifest = ModelManifest(name="camvid-copy", architecture="espnet", p=2, q=8, decoder_variant="camvid",
                             classes=load_class_file(REPO / "config" / "camvid_classes.yaml"),
                             preprocessing=CAMVID_PREPROCESSING, input_size=(480, 360), weights_sha256="",
                             weights_size=0, num_params=0)
    save_model(folder, build_model("camvid", weights_dir), manifest)
    return folder


@pytest.fixture(scope="module")
def frame(shared_dir: Path) -> np.ndarray:
    path = sorted((shared_dir / "camvid" / "val" / "images").glob("*.png"))[0]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None
    return np.ascontiguousarray(img)


@pytest.mark.parametrize("full", [False, True], ids=["logits", "preprocessing+argmax"])
def test_onnx_runtime_agrees_with_pytorch(camvid_model: Path, frame: np.ndarray, tmp_path: Path, full: bool) -> None:
    preset = load_model(camvid_model)
    out = export_onnx(preset, tmp_path / "m.onnx", with_preprocessing=full, argmax=full)
    check = check_onnx(preset, out, image=frame)
    assert check.agreement >= 0.999
    if not full:
        assert check.max_abs_diff < 1e-3
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["espnet_ros.name"] == "camvid-copy" and meta["espnet_ros.input_size"] == "480x360"
    assert json.loads(meta["espnet_ros.classes"])[3] == {"id": 3, "name": "Road", "color_rgb": [128, 64, 128]}
    assert meta["espnet_ros.with_preprocessing"] == ("1" if full else "0")


def test_espnet_c_export_upsamples(weights_dir: Path, tmp_path: Path, frame: np.ndarray) -> None:
    preset = get_preset("cityscapes-c-p2q3")
    out = export_onnx(preset, tmp_path / "c.onnx", network_size=(480, 360), weights_dir=weights_dir)
    assert check_onnx(preset, out, network_size=(480, 360), image=frame, weights_dir=weights_dir).agreement >= 0.999


def test_cli_export(camvid_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(camvid_model), "--onnx", str(out), "--with-preprocessing", "--argmax"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "ONNX Runtime agrees with PyTorch" in text and "uint8 BGR" in text
    assert main(["export", "--model", str(tmp_path), "--onnx", str(out)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
