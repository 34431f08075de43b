"""Small real rosbag2 recordings for the tests, written with rosbags: two cameras, raw and compressed frames.

``/front/image_raw`` holds raw frames (bgr8 and rgb8) and one frame in an encoding the codec does not support,
``/front/camera_info`` a CameraInfo before the first frame, ``/rear/image_raw/compressed`` jpeg frames, and
``/notes`` a ``std_msgs/String`` (a topic that is not an image). Header stamps differ from bag times (recorded
frames arrive after they were taken), so tests can tell which one an output kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from node_harness import textured
from numpy.typing import NDArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from espnet_ros.bags import CAMERA_INFO_TYPE, COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagWriter
from espnet_ros.image_codec import encode_compressed, encode_image

FRONT = "/front/image_raw"
REAR = "/rear/image_raw/compressed"
FRONT_INFO = "/front/camera_info"
NOTES = "/notes"
T0 = 1_700_000_000 * 10**9
PERIOD = 100_000_000  # 10 Hz
DELAY = 20_000_000  # bag time = stamp + 20 ms
HEIGHT, WIDTH = 48, 64


@dataclass(frozen=True)
class Recorded:
    """One recorded frame: topic, bag time, header stamp in ns, frame_id and the BGR image (``None``: bad frame)."""

    topic: str
    time_ns: int
    stamp_ns: int
    frame_id: str
    bgr: NDArray[np.uint8] | None


def _header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def write_bag(path: Path, storage: str = "mcap", frames: int = 3, bad_frame: bool = True) -> list[Recorded]:
    """Write the recording to ``path`` (a rosbag2 folder); return the frames as recorded, in bag order."""
    recorded: list[Recorded] = []
    with BagWriter(path, storage) as w:
        for topic, kind in ((FRONT, IMAGE_TYPE), (REAR, COMPRESSED_IMAGE_TYPE), (FRONT_INFO, CAMERA_INFO_TYPE),
                            (NOTES, "std_msgs/msg/String")):
            w.add_topic(topic, kind)
        info = CameraInfo(header=_header(T0, "front_optical"), width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
        info.k = [60.0, 0.0, 31.5, 0.0, 60.0, 23.5, 0.0, 0.0, 1.0]
        info.p = [60.0, 0.0, 31.5, 0.0, 0.0, 60.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.d = [0.0] * 5
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        w.write(FRONT_INFO, T0, info)
        w.write(NOTES, T0, String(data="not an image"))
        for i in range(frames):
            stamp = T0 + i * PERIOD
            bgr = textured(HEIGHT, WIDTH, seed=i)
            if i % 2:
                msg = encode_image(np.ascontiguousarray(bgr[:, :, ::-1]), "rgb8", _header(stamp, "front_optical"))
            else:
                msg = encode_image(bgr, "bgr8", _header(stamp, "front_optical"))
            w.write(FRONT, stamp + DELAY, msg)
            recorded.append(Recorded(FRONT, stamp + DELAY, stamp, "front_optical", bgr))
            rear = textured(HEIGHT, WIDTH, seed=100 + i)
            cmsg = encode_compressed(rear, "png", _header(stamp + 1000, "rear_optical"))
            w.write(REAR, stamp + DELAY + 1000, cmsg)
            recorded.append(Recorded(REAR, stamp + DELAY + 1000, stamp + 1000, "rear_optical", rear))
        if bad_frame:
            stamp = T0 + frames * PERIOD
            bad = Image(header=_header(stamp, "front_optical"), height=HEIGHT, width=WIDTH, encoding="32FC1",
                        step=WIDTH * 4, data=bytes(HEIGHT * WIDTH * 4))
            w.write(FRONT, stamp + DELAY, bad)
            recorded.append(Recorded(FRONT, stamp + DELAY, stamp, "front_optical", None))
    return recorded
