"""Tests of espnet_ros.core.weights with the 7 real upstream files: strict loading, parameter counts, and refusal of
tampered, truncated, foreign, missing and other presets' files with an actionable message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from espnet_ros.core.errors import WeightsError
from espnet_ros.core.weights import PRESETS, build_model, get_preset, load_state_dict, resolve_weights_file

# Parameter counts from FACTS.md (measured on the upstream code), not from the registry under test.
FACTS_PARAMS = {
    "decoder/espnet_p_2_q_8.pth": 364_569,
    "decoder/espnet_p_2_q_5.pth": 267_417,
    "decoder/espnet_p_2_q_3.pth": 202_649,
    "decoder/espnet_p_2_q_8_camvid.pth": 354_517,
    "encoder/espnet_p_2_q_8.pth": 349_449,
    "encoder/espnet_p_2_q_5.pth": 252_297,
    "encoder/espnet_p_2_q_3.pth": 187_529,
}
FIX = "espnet-ros download-weights"


def test_registry_covers_the_seven_files() -> None:
    assert sorted(p.file for p in PRESETS.values()) == sorted(FACTS_PARAMS)
    assert get_preset("cityscapes").label_set.num_classes == 20
    assert get_preset("camvid").label_set.num_classes == 12


@pytest.mark.parametrize("name", list(PRESETS))
def test_loads_strictly_with_weights_only(name: str, weights_dir: Path) -> None:
    preset = PRESETS[name]
    path = weights_dir / preset.file
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model = build_model(preset, weights_dir)  # load_state_dict(strict=True) inside
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == FACTS_PARAMS[preset.file] == preset.num_params
    loaded = load_state_dict(preset, weights_dir)
    assert loaded.keys() == state.keys()
    missing, unexpected = preset.build().load_state_dict(loaded, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


@pytest.fixture
def camvid_copy(weights_dir: Path, tmp_path: Path) -> Path:
    """A weights folder in tmp_path holding a copy of the CamVid file; returns that file's path."""
    preset = PRESETS["camvid"]
    dest = tmp_path / preset.file
    dest.parent.mkdir(parents=True)
    shutil.copyfile(weights_dir / preset.file, dest)
    return dest


def refused(folder: Path, name: str = "camvid") -> str:
    with pytest.raises(WeightsError) as info:
        build_model(name, folder)
    message = str(info.value)
    assert FIX in message, message
    return message


def test_good_copy_loads(camvid_copy: Path, tmp_path: Path) -> None:
    build_model("camvid", tmp_path)
    assert resolve_weights_file("camvid", tmp_path) == camvid_copy


def test_tampered_file_is_refused(camvid_copy: Path, tmp_path: Path) -> None:
    data = bytearray(camvid_copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    camvid_copy.write_bytes(bytes(data))
    assert "modified or corrupted" in refused(tmp_path)


def test_truncated_file_is_refused(camvid_copy: Path, tmp_path: Path) -> None:
    data = camvid_copy.read_bytes()
    camvid_copy.write_bytes(data[: len(data) // 2])
    assert f"truncated ({len(data) // 2} of {len(data)} bytes)" in refused(tmp_path)


def test_non_torch_file_is_refused(camvid_copy: Path, tmp_path: Path) -> None:
    camvid_copy.write_text("<html>404 Not Found</html>\n")
    assert "not a PyTorch file" in refused(tmp_path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path)
    assert "not found" in message and str(tmp_path / "decoder" / "espnet_p_2_q_8_camvid.pth") in message


def test_file_of_another_preset_is_refused(weights_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / PRESETS["cityscapes"].file
    dest.parent.mkdir(parents=True)
    shutil.copyfile(weights_dir / PRESETS["cityscapes-p2q5"].file, dest)
    message = refused(tmp_path, "cityscapes")
    assert "holds the weights of preset 'cityscapes-p2q5'" in message


def test_explicit_weights_file_is_verified(weights_dir: Path) -> None:
    build_model("camvid", weights_file=weights_dir / PRESETS["camvid"].file)
    with pytest.raises(WeightsError, match="holds the weights of preset 'camvid'"):
        build_model("cityscapes", weights_file=weights_dir / PRESETS["camvid"].file)


def test_unknown_preset() -> None:
    with pytest.raises(WeightsError, match="unknown weights preset 'cityscape'; known presets: cityscapes"):
        get_preset("cityscape")
