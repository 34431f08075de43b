"""Output formats of the segmentation node: compressed outputs (image_transport's layout) and what Nav2 reads.

Compressed outputs must decode to the raw outputs of the same frame (PNG exactly; JPEG exactly as OpenCV encodes the
raw output at ``jpeg_quality``) and are encoded only for subscribers. Nav2's semantic segmentation layer reads mono8
class masks with ``step == width``, an optional mono8 confidence and latched labels: checked at an odd frame width.
"""

from __future__ import annotations

import cv2
import numpy as np
from node_harness import LATCHED, Harness, labels_listener, textured
from rclpy.context import Context
from sensor_msgs.msg import CompressedImage, Image

from espnet_ros.image_codec import encode_compressed, encode_image
from espnet_ros.label_msgs import label_info_type, vision_msgs_available
from espnet_ros.segmentation_node import COMPRESSED_OUTPUTS

QUALITY = 75


def raw_pixels(msg: Image) -> np.ndarray:
    channels = 1 if msg.encoding == "mono8" else 3
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels).squeeze()


def test_compressed_outputs_decode_to_the_raw_outputs(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid", "jpeg_quality": QUALITY}, subscribe=tuple(COMPRESSED_OUTPUTS))
    try:
        compressed = {name: h.listen(f"/segmentation/{name}/compressed", CompressedImage)
                      for name in COMPRESSED_OUTPUTS}
        h.wait_connected()
        assert h.spin_until(lambda: all(h.node.count_subscribers(f"/segmentation/{n}/compressed") > 0
                                        for n in COMPRESSED_OUTPUTS))
        header = h.header(frame_id="cam")
        h.send("/image", encode_image(textured(241, 481), "bgr8", header))
        assert h.spin_until(lambda: all(compressed[n] and h.on(0, n) for n in COMPRESSED_OUTPUTS))
        for name, fmt in COMPRESSED_OUTPUTS.items():
            msg, raw = compressed[name][-1], h.on(0, name)[-1]
            assert msg.header == header == raw.header, name
            pixels = raw_pixels(raw)
            if raw.encoding == "rgb8":
                pixels = np.ascontiguousarray(pixels[:, :, ::-1])  # compressed colour is BGR, as image_transport's
            decoded = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
            assert decoded.shape == pixels.shape, name
            if fmt == "png":
                assert msg.format == "mono8; png compressed "
                assert np.array_equal(decoded, pixels)  # lossless: the class ids
            else:
                assert msg.format == "bgr8; jpeg compressed bgr8"
                # exactly the raw output through JPEG at jpeg_quality, which stays close to it
                assert bytes(msg.data) == bytes(encode_compressed(pixels, "jpeg", quality=QUALITY).data), name
                error = np.abs(decoded.astype(np.int16) - pixels.astype(np.int16))
                assert error.mean() < 4.0, (name, error.mean())
    finally:
        h.close()


def test_compressed_outputs_are_encoded_only_for_subscribers(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("overlay", "class_mask"))
    try:
        h.wait_connected()
        h.send("/image", encode_image(textured(96, 128), "bgr8", h.header()))
        assert h.spin_until(lambda: h.on(0, "overlay") and h.on(0, "class_mask") and h.node.idle())
        published = h.node.published_outputs()
        assert published == {"labels": 1, "overlay": 1, "class_mask": 1}  # no compressed form encoded
        overlays = h.listen("/segmentation/overlay/compressed", CompressedImage)
        assert h.spin_until(lambda: h.node.count_subscribers("/segmentation/overlay/compressed") > 0)
        h.send("/image", encode_image(textured(96, 128), "bgr8", h.header()))
        assert h.spin_until(lambda: len(overlays) == 1 and h.node.idle())
        published = h.node.published_outputs()
        assert published == {"labels": 1, "overlay": 2, "class_mask": 2, "overlay/compressed": 1}
    finally:
        h.close()


def test_masks_for_nav2_are_mono8_with_step_equal_width_and_labels_are_latched(ros_context: Context) -> None:
    h = Harness(ros_context, {"preset": "camvid"}, subscribe=("class_mask", "confidence"))
    try:
        h.wait_connected()
        header = h.header(frame_id="camera_optical")
        h.send("/image", encode_image(textured(241, 481), "bgr8", header))
        assert h.spin_until(lambda: h.on(0, "class_mask") and h.on(0, "confidence"))
        for name in ("class_mask", "confidence"):
            msg = h.on(0, name)[-1]
            assert (msg.encoding, msg.width, msg.height, msg.step) == ("mono8", 481, 241, 481), name
            assert len(msg.data) == 481 * 241 and msg.header == header, name
        assert int(raw_pixels(h.on(0, "class_mask")[-1]).max()) < len(h.node.labels.names)
        labels = labels_listener(h)  # a late transient-local subscriber still gets them
        assert h.spin_until(lambda: len(labels) == 1)
        if vision_msgs_available():
            label_info = h.listen("/segmentation/label_info", label_info_type(), LATCHED)
            assert h.spin_until(lambda: len(label_info) == 1)
            assert [c.class_name for c in label_info[0].class_map] == list(h.node.labels.names)
    finally:
        h.close()
