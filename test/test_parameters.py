"""Pure tests of the node's building blocks: parameter validation, QoS parsing, topic layout, camera-info scaling,
label messages and diagnostics statistics (no node, no executor)."""

from __future__ import annotations

import json
import math

import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from espnet_ros.core.labels import CAMVID, CITYSCAPES
from espnet_ros.diagnostics import (
    CameraStats,
    LatencyWindow,
    RateMeter,
    build_diagnostic_array,
    percentile,
)
from espnet_ros.label_msgs import LABELS_FORMAT, labels_json
from espnet_ros.parameters import (
    PARAMETERS,
    TUNABLE,
    ParameterError,
    apply_updates,
    config_from_values,
)
from espnet_ros.qos import LATCHED_QOS, OUTPUT_QOS, QosError, parse_qos
from espnet_ros.segmentation_node import camera_topics, scale_camera_info


def test_defaults_work_on_a_cpu_machine() -> None:
    c = config_from_values({})
    assert (c.preset, c.device, c.output_resolution, c.cameras) == ("cityscapes", "auto", "camera", ("image",))
    assert c.drivable_ids == (0,) and c.input_qos == "sensor_data" and c.image_transport == "raw"
    assert config_from_values({"preset": "camvid"}).drivable_ids == (3,)  # "road" is CamVid's "Road"
    assert c.gpu_precision == "float16" and config_from_values({"gpu_precision": "Float32"}).gpu_precision == "float32"


def test_every_parameter_is_described_and_read_only_unless_tunable() -> None:
    names = [p.name for p in PARAMETERS]
    assert len(names) == len(set(names))
    assert set(TUNABLE) == {"overlay_alpha", "drivable_classes", "max_frame_age", "max_queue_delay", "stall_timeout",
                            "camera_mount"}
    for p in PARAMETERS:
        d = p.descriptor()
        assert d.name == p.name and len(d.description) > 30
        assert d.read_only == (p.name not in TUNABLE)
        if p.name in ("overlay_alpha", "max_frame_age", "max_queue_delay", "stall_timeout"):
            assert d.type == ParameterType.PARAMETER_DOUBLE and len(d.floating_point_range) == 1
    alpha = next(p for p in PARAMETERS if p.name == "overlay_alpha").descriptor().floating_point_range[0]
    assert (alpha.from_value, alpha.to_value) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"preset": "resnet"}, ["preset='resnet'", "camvid"]),
        ({"device": "cuda:x"}, ["device='cuda:x'"]),
        ({"output_resolution": "half"}, ["output_resolution='half'"]),
        ({"overlay_alpha": -0.1}, ["overlay_alpha=-0.1", "[0.0, 1.0]"]),
        ({"overlay_alpha": "high"}, ["overlay_alpha='high'", "number"]),
        ({"max_frame_age": 1e9}, ["max_frame_age"]),
        ({"max_queue_delay": -2.0}, ["max_queue_delay=-2.0", "[-1.0, 60.0]"]),
        ({"drivable_classes": ["road", "lava"]}, ["lava", "valid names"]),
        ({"drivable_classes": [42]}, ["42", "0..19"]),
        ({"input_qos": "reliable:0"}, ["depth 0"]),
        ({"input_qos": "reliable:x"}, ["not an integer"]),
        ({"image_transport": "h264"}, ["h264"]),
        ({"cameras": []}, ["empty"]),
        ({"cameras": ["/a/image", "/a/image"]}, ["more than once"]),
        ({"cameras": ["/a/ima ge"]}, ["invalid topic name"]),
        ({"num_threads": -1}, ["num_threads"]),
        ({"backend": "tensorrt"}, ["backend='tensorrt'", "compiled"]),
        ({"gpu_precision": "int8"}, ["gpu_precision='int8'", "float16", "float32"]),
        ({"colour": "blue"}, ["unknown parameter", "colour"]),
    ],
)
def test_bad_values_name_the_value_and_the_fix(values: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ParameterError) as err:
        config_from_values(values)
    for w in words:
        assert w in str(err.value)


def test_drivable_classes_accept_names_ids_and_strings() -> None:
    assert config_from_values({"drivable_classes": ["Road", "sidewalk"]}).drivable_ids == (0, 1)
    assert config_from_values({"drivable_classes": [1, 0, 1]}).drivable_ids == (0, 1)
    assert config_from_values({"drivable_classes": "road, 9"}).drivable_ids == (0, 9)
    assert config_from_values({"drivable_classes": []}).drivable_ids == CITYSCAPES.default_drivable


def test_runtime_updates_validate_and_refuse_read_only() -> None:
    c = config_from_values({"preset": "camvid"})
    assert c.max_queue_delay == 0.02
    new = apply_updates(c, {"overlay_alpha": 0.25, "drivable_classes": ["Pavement"], "max_frame_age": 0.0,
                            "max_queue_delay": -1.0})
    assert (new.overlay_alpha, new.drivable_ids, new.max_frame_age, new.max_queue_delay) == (0.25, (4,), 0.0, -1.0)
    assert c.overlay_alpha == 0.5  # frozen: the old config is unchanged
    with pytest.raises(ParameterError, match=r"read-only.*restart"):
        apply_updates(c, {"preset": "cityscapes"})
    with pytest.raises(ParameterError, match="road"):
        apply_updates(c, {"drivable_classes": ["road", "sidewalk"]})  # no "sidewalk" in CamVid
    with pytest.raises(ParameterError, match="overlay_alpha"):
        apply_updates(c, {"overlay_alpha": 2.0})


def test_parse_qos() -> None:
    q = parse_qos("sensor_data")
    assert (q.reliability, q.depth, q.history, q.durability) == (
        ReliabilityPolicy.BEST_EFFORT, 2, HistoryPolicy.KEEP_LAST, DurabilityPolicy.VOLATILE)
    assert parse_qos(" Reliable:1 ").reliability == ReliabilityPolicy.RELIABLE and parse_qos("reliable:1").depth == 1
    assert parse_qos("best-effort:20").depth == 20
    for bad in ("", "fast", "reliable:", "reliable:1001", "sensor_data:-1"):
        with pytest.raises(QosError):
            parse_qos(bad)
    assert OUTPUT_QOS.reliability == ReliabilityPolicy.RELIABLE
    assert LATCHED_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_camera_topic_layout() -> None:
    t = camera_topics("/front/image_raw")
    assert (t.image, t.camera_info, t.prefix) == ("/front/image_raw", "/front/camera_info", "/front/segmentation")
    assert t.output("overlay") == "/front/segmentation/overlay"
    c = camera_topics("/robot/cam/image", "compressed")
    assert (c.image, c.camera_info) == ("/robot/cam/image/compressed", "/robot/cam/camera_info")
    assert camera_topics("/image").prefix == "/segmentation"
    with pytest.raises(ValueError):
        camera_topics("image")


def _info(width: int, height: int) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.1, -0.2, 0.0, 0.0, 0.0]
    info.k = [1000.0, 0.0, 1023.5, 0.0, 990.0, 511.5, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [1000.0, 0.0, 1023.5, -50.0, 0.0, 990.0, 511.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_scale_camera_info_keeps_pixel_centres_aligned() -> None:
    header = Header(frame_id="cam")
    same = scale_camera_info(_info(2048, 1024), 2048, 1024, header)
    assert list(same.k) == list(_info(2048, 1024).k) and same.header.frame_id == "cam"
    half = scale_camera_info(_info(2048, 1024), 1024, 512, header)
    assert (half.width, half.height) == (1024, 512)
    assert half.k[0] == 500.0 and half.k[4] == 495.0
    assert half.k[2] == (1023.5 + 0.5) / 2 - 0.5 and half.k[5] == (511.5 + 0.5) / 2 - 0.5
    assert half.p[3] == -25.0 and list(half.d) == list(_info(2048, 1024).d)
    # The image centre maps to the image centre for any scale.
    odd = scale_camera_info(_info(2048, 1024), 480, 360, header)
    assert odd.k[2] == pytest.approx(239.5) and odd.k[5] == pytest.approx(179.5)
    # Binning: the info describes the full sensor, the image is binned 2x2.
    binned = _info(4096, 2048)
    binned.binning_x = binned.binning_y = 2
    b = scale_camera_info(binned, 2048, 1024, header)
    assert b.k[0] == 500.0 and (b.binning_x, b.binning_y) == (0, 0)
    # width/height 0 in the info: taken as the image's size.
    unknown = scale_camera_info(_info(0, 0), 2048, 1024, header)
    assert list(unknown.k) == list(_info(0, 0).k)


def test_labels_json_lists_ids_names_colours_and_drivable() -> None:
    doc = json.loads(labels_json(CAMVID, "camvid", (3, 4)))
    assert doc["format"] == LABELS_FORMAT and doc["ignore_id"] == 11 and doc["drivable_ids"] == [3, 4]
    assert [(c["id"], c["name"]) for c in doc["classes"][:2]] == [(0, "Sky"), (1, "Building")]
    assert doc["classes"][0]["color_rgb"] == [128, 128, 128] and len(doc["classes"]) == 12


def test_rate_meter_and_latency_window() -> None:
    r = RateMeter(window=2.0)
    assert r.rate(0.0) == 0.0
    for i in range(11):
        r.add(i * 0.1)  # 10 Hz for one second
    assert r.rate(1.0) == pytest.approx(10.0)
    assert r.rate(2.0) == pytest.approx(5.0)  # silence since t=1 lowers the rate
    assert r.rate(10.0) == 0.0 and len(r) == 0
    bounded = RateMeter(window=100.0, max_events=50)
    for i in range(1000):
        bounded.add(float(i))
    assert len(bounded) == 50
    lat = LatencyWindow(max_samples=100)
    assert math.isnan(lat.p50())
    for v in range(1, 201):
        lat.add(v / 1000)
    assert len(lat) == 100 and lat.p50() == pytest.approx(0.1505) and lat.p95() == pytest.approx(0.19505)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_diagnostic_array_has_a_status_per_camera_and_one_for_the_node() -> None:
    stats = CameraStats(topic="/front/image_raw", received=3, processed=2, rejected=1, last_input=0.0)
    stats.latency.add(0.05)
    msg = build_diagnostic_array(Header().stamp, "/espnet_segmentation", [(stats.snapshot(0.5), 1, "some")],
                                 {"device": "cpu", "preset": "camvid"})
    node, cam = msg.status
    assert node.name == "/espnet_segmentation: segmentation" and node.level == b"\x01" and node.hardware_id == "cpu"
    assert cam.hardware_id == "/front/image_raw" and cam.message == "some"
    values = {kv.key: kv.value for kv in cam.values}
    assert values["frames rejected (malformed)"] == "1" and values["latency p50 (ms)"] == "50.0"
    assert values["input rate (Hz)"] == "0.0"


def test_the_declared_choices_and_ranges_are_what_validation_enforces() -> None:
    for spec in PARAMETERS:
        d = spec.descriptor()
        if spec.choices:
            assert d.additional_constraints == spec.expected().split(" (", 1)[1].rstrip(")")
            for choice in spec.choices:  # every declared choice is accepted
                config_from_values({spec.name: choice})
            with pytest.raises(ParameterError) as err:
                config_from_values({spec.name: "not-a-choice"})
            assert d.additional_constraints in str(err.value)
        for rng in d.integer_range:
            for bad in (rng.from_value - 1, rng.to_value + 1):
                with pytest.raises(ParameterError, match=f"{spec.name}={bad}.*{rng.from_value}..{rng.to_value}"):
                    config_from_values({spec.name: bad})
        for frng in d.floating_point_range:
            for bad in (frng.from_value - 1.0, frng.to_value + 1.0):
                with pytest.raises(ParameterError, match=spec.name):
                    config_from_values({spec.name: bad})
