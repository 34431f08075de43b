"""Write the bag that docs/recordings.md measures segment-bag on: the sample frames as a camera recording.

An MCAP bag with one ``sensor_msgs/Image`` topic, ``/front/image_raw`` (bgr8, frame id ``front_optical``), holding
the sample frames in turn (the two 2048x1024 Cityscapes frames: ``$ESPNET_ROS_SAMPLES_DIR``, else the default samples
folder), stamped and recorded 100 ms apart.

    python tools/sample_bag.py OUT [FRAMES]        (default 32 frames; OUT must not exist)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
from std_msgs.msg import Header

from espnet_ros.bags import IMAGE_TYPE, BagWriter, time_msg
from espnet_ros.core.frames import FrameSource, samples_dir
from espnet_ros.image_codec import encode_image

TOPIC = "/front/image_raw"
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out, count = Path(argv[0]), int(argv[1]) if len(argv) > 1 else 32
    frames = [f.image for f in FrameSource([str(samples_dir())])]
    with BagWriter(out, "mcap") as writer:
        writer.add_topic(TOPIC, IMAGE_TYPE)
        for i in range(count):
            t = START_NS + i * PERIOD_NS
            header = Header(stamp=time_msg(t), frame_id="front_optical")
            writer.write(TOPIC, t, encode_image(frames[i % len(frames)], "bgr8", header))
    print(f"{out}: {count} frame(s) of {frames[0].shape[1]}x{frames[0].shape[0]} on {TOPIC}")
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(main(sys.argv[1:]))
