"""Training: class files, label maps, model files, fine-tuning init, the upstream recipe's loss and class weights.

Small CamVid frames (downscaled into tmp_path) keep every run to seconds; the loss and the class weights are checked
against a reference written here in float64 numpy, independently of espnet_ros.core.train.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from espnet_ros.cli import main
from espnet_ros.core.classes import ClassFile, LabelFileError, load_class_file, read_label_map
from espnet_ros.core.errors import WeightsError
from espnet_ros.core.model import ESPNet
from espnet_ros.core.modelfile import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModelManifest,
    find_models,
    load_model,
    resolve_preset,
    save_model,
)
from espnet_ros.core.segmenter import Segmenter
from espnet_ros.core.train import (
    RECIPES,
    TrainConfig,
    TrainError,
    adapt_state,
    class_mapping,
    class_weights,
    load_split,
    train,
)
from espnet_ros.core.weights import CAMVID_PREPROCESSING, build_model, get_preset

REPO = Path(__file__).resolve().parents[1]
CAMVID_CLASSES = REPO / "config" / "camvid_classes.yaml"
SIZE = (96, 72)


def tiny_split(src: Path, dest: Path, count: int, size: tuple[int, int] = (120, 90)) -> tuple[Path, Path]:
    """The first ``count`` frames of a CamVid split, downscaled to ``size`` (labels nearest), as images/ labels/."""
    images, labels = dest / "images", dest / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for path in sorted((src / "images").glob("*.png"))[:count]:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        lab = cv2.imread(str(src / "labels" / path.name), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(images / path.name), cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(labels / path.name), cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST))
    return images, labels


@pytest.fixture(scope="module")
def camvid_tiny(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("camvid_tiny")
    ti, tl = tiny_split(shared_dir / "camvid" / "train", root / "train", 4)
    vi, vl = tiny_split(shared_dir / "camvid" / "val", root / "val", 2)
    return {"images": ti, "labels": tl, "val_images": vi, "val_labels": vl}


class Recorder:
    """Keeps every batch's loss, logits and target, and the epoch rows."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.batches: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.rows: list[dict[str, Any]] = []

    def epoch_start(self, stage: str, epoch: int, batches: int) -> None:
        self.stages.append(stage)

    def batch_end(self, loss: float, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.batches.append((loss, logits.double().numpy(), target.numpy()))

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def reference_weights(label_files: list[Path], k: int) -> np.ndarray:
    """1 / ln(1.10 + p_c), p_c the share of class c among the pixels labelled 0..k-1, counted class by class."""
    counts = np.zeros(k, np.float64)
    for f in label_files:
        lab = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        for c in range(k):
            counts[c] += float(np.sum(lab == c))
    return 1.0 / np.log(1.10 + counts / counts.sum())


def reference_loss(logits: np.ndarray, target: np.ndarray, weights: np.ndarray, ignore: int) -> float:
    """Weighted mean of -log softmax at the target class over the pixels not labelled ``ignore`` (float64)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    keep = target != ignore
    t = np.where(keep, target, 0)
    picked = np.take_along_axis(logp, t[:, None], axis=1)[:, 0]
    w = weights[t] * keep
    return float(-(w * picked).sum() / w.sum())


def test_upstream_recipe_from_scratch_matches_the_reference_loss_and_weights(
    camvid_tiny: dict[str, Path], tmp_path: Path
) -> None:
    classes = load_class_file(CAMVID_CLASSES)
    rec = Recorder()
    cfg = TrainConfig(images=camvid_tiny["images"], labels=camvid_tiny["labels"], classes=classes,
                      out=tmp_path / "run", recipe=RECIPES["upstream"], epochs=1, max_batches=3, network_size=SIZE,
                      batch_size=2, num_threads=1, seed=3)
    result = train(cfg, rec)
    ref_w = reference_weights(sorted(camvid_tiny["labels"].glob("*.png")), 12)
    got_w = class_weights([cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
                           for f in sorted(camvid_tiny["labels"].glob("*.png"))], 12)
    np.testing.assert_allclose(got_w, ref_w, rtol=0, atol=1e-5)
    manifest = json.loads((result.best / MANIFEST_FILE).read_text())
    np.testing.assert_allclose(manifest["provenance"]["recipe"]["class_weights"], ref_w, rtol=0, atol=1e-5)
    assert rec.stages == ["encoder", "decoder"] and len(rec.batches) == 6
    for n, (loss, logits, target) in enumerate(rec.batches):
        assert abs(loss - reference_loss(logits, target, ref_w, 255)) < 1e-5, n
        # the encoder stage learns labels at 1/8 of the input; the full network at the input size
        assert logits.shape[2:] == target.shape[1:]
    # upstream's passes in order: 1.5x (144x112 here: multiples of 8; the encoder's labels 18x14), then
    # 1280x720 for 1024x512 (120x104 here), for both stages
    assert rec.batches[0][2].shape[1:] == (14, 18) and rec.batches[2][2].shape[1:] == (13, 15)
    assert rec.batches[3][2].shape[1:] == (112, 144) and rec.batches[5][2].shape[1:] == (104, 120)
    assert load_model(result.best).architecture == "espnet"
    assert load_model(tmp_path / "run" / "encoder" / "best").architecture == "espnet_c"


def test_quick_recipe_resume_seed_and_budget(camvid_tiny: dict[str, Path], tmp_path: Path, weights_dir: Path) -> None:
    classes = load_class_file(CAMVID_CLASSES)
    base = TrainConfig(images=camvid_tiny["images"], labels=camvid_tiny["labels"], classes=classes,
                       out=tmp_path / "a", val_images=camvid_tiny["val_images"], val_labels=camvid_tiny["val_labels"],
                       init="camvid", recipe=RECIPES["quick"], epochs=1, max_batches=1, network_size=SIZE,
                       batch_size=2, num_threads=1, weights_dir=weights_dir)
    first, again = Recorder(), Recorder()
    res = train(base, first)
    train(TrainConfig(**{**base.__dict__, "out": tmp_path / "b"}), again)
    assert first.batches[0][0] == pytest.approx(again.batches[0][0], abs=1e-6)  # same seed, same first batch
    assert not math.isnan(res.best_miou) and res.history[0]["val_miou"] == pytest.approx(res.best_miou)
    with pytest.raises(TrainError, match="--resume"):
        train(base)
    resumed = Recorder()
    res2 = train(TrainConfig(**{**base.__dict__, "epochs": 2, "resume": True}), resumed)
    assert [r["epoch"] for r in res2.history] == [1, 2] and [r["epoch"] for r in resumed.rows] == [2]
    assert res2.history[1]["lr"] == pytest.approx(RECIPES["quick"].lr * 0.5)  # second of two epochs: halved once
    with pytest.raises(TrainError, match="other classes"):
        train(TrainConfig(**{**base.__dict__, "epochs": 3, "resume": True, "seed": 1}))
    timed = train(TrainConfig(**{**base.__dict__, "out": tmp_path / "c", "epochs": None, "max_minutes": 1e-4}))
    assert timed.stopped_by == "time" and len(timed.history) == 1  # one batch, then time is up


def test_fine_tuning_keeps_the_encoder_and_maps_class_rows(weights_dir: Path) -> None:
    classes = load_class_file(CAMVID_CLASSES)
    source = build_model("cityscapes", weights_dir)
    cs = get_preset("cityscapes").label_set
    mapping = class_mapping(classes, cs)
    assert mapping[5] == [cs.class_id("vegetation")] and mapping[11] == [cs.class_id("void")]
    model = ESPNet(12, 2, 8, "cityscapes")
    state, counts = adapt_state(source.state_dict(), model, mapping, 20)
    old = source.state_dict()
    assert torch.equal(state["encoder.level3.7.d8.conv.weight"], old["encoder.level3.7.d8.conv.weight"])
    rows = [m[0] for m in mapping]
    torch.testing.assert_close(state["encoder.classifier.conv.weight"], old["encoder.classifier.conv.weight"][rows])
    torch.testing.assert_close(state["classifier.weight"], old["classifier.weight"][rows][:, rows])
    torch.testing.assert_close(state["br.running_var"], old["br.running_var"][rows])
    assert counts["fresh"] == 0 and counts["mapped"] > 0
    # the same classes in another order: the network's logits come out in that order, exactly
    perm = list(np.random.default_rng(0).permutation(20))
    permuted = ESPNet(20, 2, 8, "cityscapes")
    permuted.load_state_dict(adapt_state(old, permuted, [[int(i)] for i in perm], 20)[0])
    x = torch.randn(1, 3, 64, 96) * 0.01
    with torch.no_grad():
        torch.testing.assert_close(permuted.eval()(x), source(x)[:, perm], atol=1e-4, rtol=1e-4)


def test_fine_tuning_keeps_the_initial_decoder_width(weights_dir: Path, tmp_path: Path) -> None:
    """A 12-class model with the Cityscapes decoder's width: every tensor copied but the last layer's class rows,
    so its logits are the means of its source classes' Cityscapes logits; it saves, loads and runs on every path."""
    classes = load_class_file(CAMVID_CLASSES)
    source = build_model("cityscapes", weights_dir)
    mapping = class_mapping(classes, get_preset("cityscapes").label_set)
    model = ESPNet(12, 2, 8, "cityscapes", decoder_width=20)
    state, counts = adapt_state(source.state_dict(), model, mapping, 20)
    assert counts == {"copied": len(state) - 1, "mapped": 1, "fresh": 0}
    model.load_state_dict(state)
    x = torch.randn(1, 3, 64, 96) * 0.01
    with torch.no_grad():
        old, new = source(x), model.eval()(x)
    expected = torch.stack([old[:, m].mean(1) for m in mapping], 1)
    torch.testing.assert_close(new, expected, atol=1e-4, rtol=1e-4)
    manifest = ModelManifest(
        name="wide", architecture="espnet", p=2, q=8, decoder_variant="cityscapes", classes=classes,
        preprocessing=get_preset("cityscapes").preprocessing, input_size=(96, 72), weights_sha256="", weights_size=0,
        num_params=0, decoder_width=20,
    )
    save_model(tmp_path / "wide", model, manifest)
    preset = load_model(tmp_path / "wide")
    assert preset.decoder_width == 20 and preset.label_set.num_classes == 12
    frame = (np.random.default_rng(0).random((72, 96, 3)) * 255).astype(np.uint8)
    ids = {b: Segmenter(preset, backend=b).segment(frame).class_ids for b in ("eager", "fused")}
    np.testing.assert_array_equal(ids["fused"], ids["eager"])
    assert int(ids["eager"].max()) < 12


# ------------------------------------------------------------------------------------------------ class files
def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


LOT = """
name: parking_lot
classes:
  - {id: 0, name: sky, color: [70, 130, 180], init_from: Sky}
  - {id: 1, name: lane, color: [128, 64, 128], drivable: true, init_from: [Road, Pavement]}
  - {id: 2, name: vehicle, color: [0, 0, 142], init_from: Car}
  - {id: 3, name: person, color: [220, 20, 60], init_from: Pedestrian}
  - {id: 4, name: other, color: [0, 0, 0], void: true, init_from: Unlabelled}
"""


def test_training_images_are_kept_in_memory_up_to_the_budget(camvid_tiny: dict[str, Path]) -> None:
    classes = load_class_file(Path(__file__).resolve().parents[1] / "config" / "camvid_classes.yaml")
    files = sorted(camvid_tiny["images"].iterdir())
    frame_bytes = cv2.imread(str(files[0])).nbytes
    _, ref_fingerprint, ref_mean, ref_std = load_split(camvid_tiny["images"], camvid_tiny["labels"], classes)
    for budget, kept in ((0, 0), (frame_bytes, 1), (len(files) * frame_bytes, len(files))):
        samples, fingerprint, mean, std = load_split(camvid_tiny["images"], camvid_tiny["labels"], classes, budget)
        assert sum(s.image is not None for s in samples) == kept
        for s in samples:  # kept or not, the same pixels; a kept image cannot be changed by a training step
            np.testing.assert_array_equal(s.read_image(), cv2.imread(str(s.image_path)))
            assert s.image is None or not s.image.flags.writeable
        assert fingerprint == ref_fingerprint  # what is kept changes nothing else
        np.testing.assert_array_equal(mean, ref_mean)
        np.testing.assert_array_equal(std, ref_std)


def test_class_file_example_and_errors(tmp_path: Path) -> None:
    camvid = load_class_file(CAMVID_CLASSES)
    assert camvid.label_set().names == get_preset("camvid").label_set.names
    assert camvid.label_set().colors_rgb == get_preset("camvid").label_set.colors_rgb
    assert camvid.void_id == 11 and camvid.label_set().default_drivable == (3,)
    lot = load_class_file(write_yaml(tmp_path / "lot.yaml", LOT))
    assert lot.num_classes == 5 and lot.classes[1].init_from == ("Road", "Pavement")
    for text, words in [
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0], void: true}, {id: 2, name: b, color: [1,1,1]}]",
         "without gaps"),
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0], void: true}, {id: 1, name: b, color: [1,1,1]}]",
         "at least 5"),
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0]}, {id: 1, name: b, color: [1,1,1]}]", "void: true"),
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0], void: true}, {id: 1, name: b, color: [0,0,0]}]",
         "same colour"),
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0], void: true}, {id: 1, name: b, color: [1,1]}]",
         r"color: \[R, G, B\]"),
        ("name: x y\nclasses: []", "letters, digits"),
        ("name: x\nignore_label: 1\nclasses: [{id: 0, name: a, color: [0,0,0], void: true}, "
         "{id: 1, name: b, color: [1,1,1]}]", "also a class id"),
        ("name: x\nclasses: [{id: 0, name: a, color: [0,0,0], void: true, colour: 1}, {id: 1, name: b, "
         "color: [1,1,1]}]", "unknown key"),
        ("[unclosed", "not valid YAML"),
    ]:
        with pytest.raises(LabelFileError, match=words) as err:
            load_class_file(write_yaml(tmp_path / "bad.yaml", text))
        assert "bad.yaml" in str(err.value)
    with pytest.raises(LabelFileError, match="cannot read class file"):
        load_class_file(tmp_path / "missing.yaml")


def test_label_maps_as_ids_colours_and_labelme(tmp_path: Path, shared_dir: Path) -> None:
    camvid = load_class_file(CAMVID_CLASSES)
    src = sorted((shared_dir / "camvid" / "val" / "labels").glob("*.png"))[0]
    ids = read_label_map(src, camvid, (480, 360))
    palette = np.asarray([c.color_rgb for c in camvid.classes], np.uint8)
    colour = tmp_path / "colour.png"
    cv2.imwrite(str(colour), palette[ids][:, :, ::-1])
    np.testing.assert_array_equal(read_label_map(colour, camvid, (480, 360)), ids)
    lot = load_class_file(write_yaml(tmp_path / "lot.yaml", LOT))
    doc = {"imageHeight": 40, "imageWidth": 60, "shapes": [
        {"label": "lane", "shape_type": "rectangle", "points": [[0, 20], [59, 39]]},
        {"label": "Vehicle", "shape_type": "polygon", "points": [[10, 25], [20, 25], [20, 35], [10, 35]]},
    ]}
    (tmp_path / "f.json").write_text(json.dumps(doc))
    got = read_label_map(tmp_path / "f.json", lot, (60, 40))
    assert (got[:19] == 4).all() and got[22, 40] == 1 and got[30, 15] == 2  # uncovered pixels are void
    # errors name the file and the fix
    cases = []
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), ids[:100, :100])
    cases.append((small, camvid, "image is 480x360"))
    bad_ids = tmp_path / "ids.png"
    cv2.imwrite(str(bad_ids), np.full((360, 480), 40, np.uint8))
    cases.append((bad_ids, camvid, r"id\(s\) \[40\] outside"))
    odd = tmp_path / "odd.png"
    img = palette[ids][:, :, ::-1].copy()
    img[0, 0] = (1, 2, 3)
    cv2.imwrite(str(odd), img)
    cases.append((odd, camvid, r"RGB\(3, 2, 1\) on 1 px"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    cases.append((broken, camvid, "cannot read label map"))
    doc["shapes"][0]["label"] = "grass"
    (tmp_path / "g.json").write_text(json.dumps(doc))
    cases.append((tmp_path / "g.json", lot, "label 'grass' is not a class"))
    for path, cf, words in cases:
        with pytest.raises(LabelFileError, match=words) as err:
            read_label_map(path, cf, (480, 360) if cf is camvid else (60, 40))
        assert str(path) in str(err.value)


def test_training_input_errors_exit_2_with_one_line(camvid_tiny: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    labels = tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    first = sorted(camvid_tiny["images"].glob("*.png"))[0]
    (images / first.name).write_bytes(first.read_bytes())
    base = ["-q", "train", "--images", str(images), "--labels", str(labels), "--classes", str(CAMVID_CLASSES),
            "--epochs", "1"]
    cases = [
        ([*base, "--out", str(tmp_path / "o1")], "empty"),
    ]
    lab = cv2.imread(str(camvid_tiny["labels"] / first.name), cv2.IMREAD_UNCHANGED)
    for args, words in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    cv2.imwrite(str(labels / first.name), lab[:50])
    assert main([*base, "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is 120x50 but its image is 120x90" in err and str(labels / first.name) in err
    (labels / first.name).unlink()
    cv2.imwrite(str(labels / "other.png"), lab)
    assert main([*base, "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip()
    assert "do not pair up" in err and first.stem in err and "other" in err
    (labels / "other.png").rename(labels / first.name)
    (images / first.name).write_bytes(b"broken")
    assert main([*base, "--out", str(tmp_path / "o4")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read image" in err and str(images / first.name) in err


# ------------------------------------------------------------------------------------------------ model files
@pytest.fixture
def lot_model(tmp_path: Path, weights_dir: Path) -> Path:
    """A 5-class model file initialised from the CamVid preset (no training), for format tests."""
    lot = load_class_file(write_yaml(tmp_path / "lot.yaml", LOT))
    model = ESPNet(5, 2, 8, "camvid")
    state, _ = adapt_state(build_model("camvid", weights_dir).state_dict(), model,
                           class_mapping(lot, get_preset("camvid").label_set), 12)
    model.load_state_dict(state)
    manifest = ModelManifest(name="lot", architecture="espnet", p=2, q=8, decoder_variant="camvid", classes=lot,
                             preprocessing=CAMVID_PREPROCESSING, input_size=(160, 120), weights_sha256="",
                             weights_size=0, num_params=0, provenance={"val_miou": 12.5})
    save_model(tmp_path / "models" / "lot", model.eval(), manifest)
    return tmp_path / "models" / "lot"


def test_model_file_loads_like_a_preset_and_runs_through_the_segmenter(lot_model: Path, shared_dir: Path) -> None:
    preset = resolve_preset("cityscapes", str(lot_model))  # the model wins over the preset
    assert preset.name == "lot" and preset.label_set.names == ("sky", "lane", "vehicle", "person", "other")
    assert preset.label_set.default_drivable == (1,) and preset.label_set.ignore_id == 4
    assert preset.input_size == (160, 120) and preset.metrics["val_miou"] == 12.5
    frame = cv2.imread(str(sorted((shared_dir / "camvid" / "val" / "images").glob("*.png"))[0]))
    model = build_model(preset)
    x = torch.from_numpy(preset.preprocessing.apply_numpy(frame, (160, 120))).unsqueeze(0)
    with torch.no_grad():
        want = model(x).max(1)[1][0].numpy()
    for backend in ("eager", "fused"):  # another class count through the CPU backends
        seg = Segmenter(preset, backend=backend, output_size="network", num_threads=1)
        got = seg.segment(frame).class_ids
        assert got.shape == (120, 160) and int(got.max()) <= 4
        assert (got == want).mean() >= 0.999, backend
    assert [p for p, _ in find_models(lot_model.parent)] == [lot_model]


def test_tampered_or_foreign_model_files_are_refused_with_the_fix(lot_model: Path, tmp_path: Path,
                                                                  weights_dir: Path) -> None:
    preset = load_model(lot_model)
    weights = lot_model / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="modified or corrupted") as err:
        load_model(lot_model)
    assert "restore the model folder" in str(err.value)
    with pytest.raises(WeightsError, match="modified or corrupted"):  # and on every later load of the record
        build_model(preset)
    manifest = lot_model / MANIFEST_FILE
    doc = json.loads(manifest.read_text())
    doc["classes"]["classes"][1]["color"] = [255, 255, 255]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="modified after it was written") as err:
        load_model(lot_model)
    assert "drivable_classes" in str(err.value)
    with pytest.raises(WeightsError, match=r"no manifest\.json"):
        load_model(tmp_path)
    with pytest.raises(WeightsError, match="--preset NAME"):
        load_model(weights_dir / "decoder" / "espnet_p_2_q_8.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "nothing")
    doc.pop("manifest_sha256")
    doc["format"] = "other/v9"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="not an espnet_ros model manifest"):
        load_model(lot_model)


def test_cli_eval_and_presets_take_model_files(lot_model: Path, camvid_tiny: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "lot_labels"
    labels.mkdir()
    lut = np.array([0, 4, 4, 1, 1, 4, 4, 4, 2, 3, 4, 4] + [255] * 244, np.uint8)
    for f in camvid_tiny["val_labels"].glob("*.png"):
        cv2.imwrite(str(labels / f.name), lut[cv2.imread(str(f), cv2.IMREAD_UNCHANGED)])
    assert main(["-q", "eval", "--model", str(lot_model), "--images", str(camvid_tiny["val_images"]),
                 "--labels", str(labels), "--protocol", "standard"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lot on 2 images, standard protocol") and "vehicle" in out
    assert main(["-q", "eval", "--model", str(lot_model), "--preset", "camvid", "--images", str(labels),
                 "--labels", str(labels)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["presets", "--models-dir", str(lot_model.parent)]) == 0
    out = capsys.readouterr().out
    assert str(lot_model) in out and "12.50" in out and "ok (sha256 verified)" in out


def test_classfile_roundtrip_through_the_manifest() -> None:
    camvid = load_class_file(CAMVID_CLASSES)
    assert ClassFile.from_dict(camvid.to_dict(), "x") == ClassFile(**{**camvid.__dict__, "source": "x"})
