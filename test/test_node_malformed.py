"""Malformed input never stops the node: each kind is rejected, counted and reported; good frames keep flowing.

Frames are sent one at a time (each waits until the worker has finished with the previous one) so that
latest-frame-wins never hides a frame: every malformed frame must be counted as rejected and every good frame, on
the same camera and on the other one, must be answered.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import Harness, textured
from rclpy.context import Context
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.image_codec import encode_compressed, encode_image

GOOD = textured(90, 120)


def raw(encoding: str, width: int, height: int, step: int, size: int) -> Callable[[Header], Image]:
    def make(header: Header) -> Image:
        return Image(header=header, encoding=encoding, width=width, height=height, step=step,
                     data=bytes(i % 251 for i in range(size)))
    return make


def compressed(fmt: str, data: bytes) -> Callable[[Header], CompressedImage]:
    def make(header: Header) -> CompressedImage:
        return CompressedImage(header=header, format=fmt, data=data)
    return make


RAW_MALFORMED: dict[str, Callable[[Header], Image]] = {
    "unsupported encoding": raw("32FC1", 8, 4, 32, 128),
    "empty encoding": raw("", 8, 4, 24, 96),
    "data shorter than step*height": raw("bgr8", 8, 4, 24, 95),
    "data longer than step*height": raw("bgr8", 8, 4, 24, 97),
    "no data": raw("rgb8", 8, 4, 24, 0),
    "zero width": raw("bgr8", 0, 4, 0, 0),
    "zero height": raw("mono8", 8, 0, 8, 0),
    "step < width*bpp": raw("bgr8", 8, 4, 20, 80),
    "over the size limit": raw("mono8", 20000, 1, 20000, 20000),
    "odd-width yuv422": raw("yuv422", 7, 2, 14, 28),
    "mono16 step < width*2": raw("mono16", 8, 2, 15, 30),
}

_JPEG = encode_compressed(GOOD, "jpeg").data.tobytes()
COMPRESSED_MALFORMED: dict[str, Callable[[Header], CompressedImage]] = {
    "corrupted jpeg bytes": compressed("jpeg", bytes(range(256)) * 8),
    "truncated jpeg": compressed("bgr8; jpeg compressed bgr8", _JPEG[: len(_JPEG) // 3]),
    "empty compressed data": compressed("jpeg", b""),
    "compressedDepth": compressed("32FC1; compressedDepth png", _JPEG),
    "unsupported codec": compressed("tiff", _JPEG),
}


def run_sequence(
    h: Harness, bad_kinds: dict[str, Callable[[Header], Image | CompressedImage]],
    good: Callable[[Header], Image | CompressedImage],
) -> None:
    a, b = h.node.camera_topics_of(0), h.node.camera_topics_of(1)
    h.wait_connected(0)
    h.wait_connected(1)
    good_sent = [0, 0]
    for kind, make in bad_kinds.items():
        before = h.handled(0)
        h.send(a.image, make(h.header("cam_a")))
        assert h.spin_until(lambda before=before: h.handled(0) > before), kind
        assert h.node.stats(0).rejected == list(bad_kinds).index(kind) + 1, (kind, h.node.stats(0))
        for cam, topics in ((0, a), (1, b)):
            header = h.header(f"cam_{cam}")
            h.send(topics.image, good(header))
            good_sent[cam] += 1
            assert h.spin_until(lambda cam=cam: len(h.on(cam, "class_mask")) == good_sent[cam]), (kind, cam)
            assert h.on(cam, "class_mask")[-1].header == header
    sa, sb = h.node.stats(0), h.node.stats(1)
    assert sa.rejected == len(bad_kinds) and sa.processed == good_sent[0] and sa.internal_errors == 0
    assert sb.rejected == 0 and sb.processed == good_sent[1]
    assert sa.last_problem  # the latest problem is reported

    # Diagnostics count them; a camera whose every frame is rejected is an ERROR while the other stays OK.
    diags = h.listen("/diagnostics", DiagnosticArray)
    first_bad = next(iter(bad_kinds.values()))

    def levels() -> dict[str, tuple[bytes, dict[str, str]]]:
        out = {}
        for msg in diags:
            for st in msg.status:
                out[st.hardware_id] = (st.level, {kv.key: kv.value for kv in st.values})
        return out

    def error_seen() -> bool:
        h.send(a.image, first_bad(h.header("cam_a")))
        h.send(b.image, good(h.header("cam_b")))
        seen = levels()
        return a.image in seen and seen[a.image][0] == b"\x02" and seen[b.image][0] == b"\x00"

    assert h.spin_until(error_seen)
    values = levels()[a.image][1]
    assert int(values["frames rejected (malformed)"]) >= len(bad_kinds)
    assert values["last problem"] != "none"


def test_raw_malformed_frames_are_rejected_and_counted(ros_context: Context) -> None:
    cams = ["/cam_a/image", "/cam_b/image"]
    h = Harness(ros_context, {"preset": "camvid", "cameras": cams}, subscribe=("class_mask", "overlay"))
    try:
        run_sequence(h, RAW_MALFORMED, lambda header: encode_image(GOOD, "bgr8", header))
    finally:
        h.close()


def test_compressed_malformed_frames_are_rejected_and_counted(ros_context: Context) -> None:
    cams = ["/cam_a/image", "/cam_b/image"]
    h = Harness(ros_context, {"preset": "camvid", "cameras": cams, "image_transport": "compressed"},
                subscribe=("class_mask",))
    try:
        run_sequence(h, COMPRESSED_MALFORMED, lambda header: encode_compressed(GOOD, "jpeg", header))
    finally:
        h.close()


def test_failing_publish_is_caught_and_counted(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("class_mask", "overlay"))
    try:
        h.wait_connected()
        h.node.destroy_publisher(h.node.output_publisher(0, "overlay"))  # its publish() now raises
        for n in (1, 2):
            h.send("/image", encode_image(GOOD, "bgr8", h.header()))
            assert h.spin_until(lambda n=n: len(h.on(0, "class_mask")) == n and h.node.stats().published == n)
        stats = h.node.stats()
        assert stats.publish_errors == 2 and stats.internal_errors == 0 and stats.published == 2
        assert "publishing overlay failed" in stats.last_problem
        assert h.node.published_outputs().get("overlay", 0) == 0
    finally:
        h.close()


def test_mono16_big_endian_and_padded_bayer_are_accepted(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("class_mask",))
    try:
        h.wait_connected()
        grey = np.arange(90 * 120, dtype=np.uint16).reshape(90, 120) * 7
        be = Image(header=h.header(), encoding="mono16", width=120, height=90, step=240, is_bigendian=1,
                   data=grey.astype(">u2").tobytes())
        bayer = np.zeros((90, 128), np.uint8)
        bayer[:, :120] = GOOD[:, :, 1]
        padded = Image(header=h.header(), encoding="bayer_rggb8", width=120, height=90, step=128,
                       data=bayer.tobytes())
        for n, msg in enumerate((be, padded), start=1):
            h.send("/image", msg)
            assert h.spin_until(lambda n=n: len(h.on(0, "class_mask")) == n)
            assert (h.on(0, "class_mask")[-1].width, h.on(0, "class_mask")[-1].height) == (120, 90)
        assert h.node.stats().rejected == 0
    finally:
        h.close()
