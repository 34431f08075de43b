"""Label metadata messages: which class id means what, in which colour, and which ids count as drivable.

Two latched (transient-local) messages describe the class ids in ``segmentation/class_mask``:

* ``segmentation/labels`` — ``std_msgs/String`` holding JSON, always published (the documented fallback, and the
  only one with colours)::

      {"format": "espnet_ros/labels/v1", "preset": "cityscapes", "label_set": "cityscapes", "ignore_id": 19,
       "drivable_ids": [0], "classes": [{"id": 0, "name": "road", "color_rgb": [128, 64, 128]}, ...]}

* ``segmentation/label_info`` — ``vision_msgs/LabelInfo`` (class ids and names; what Nav2's semantic segmentation
  costmap layer reads), published only where ``vision_msgs`` is importable (a ROS install; it is not on PyPI).

:func:`vision_msgs_available` is the seam the node and the tests use to tell which applies.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from typing import Any

from std_msgs.msg import Header, String

from espnet_ros.core.labels import LabelSet

__all__ = ["LABELS_FORMAT", "label_info_msg", "label_info_type", "labels_json", "labels_string_msg",
           "vision_msgs_available"]

LABELS_FORMAT = "espnet_ros/labels/v1"
"""Value of the ``format`` key of the JSON labels message (bumped on incompatible changes)."""


def label_info_type() -> Any | None:
    """The ``vision_msgs.msg.LabelInfo`` class, or ``None`` where vision_msgs is not installed."""
    try:
        module = importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None
    return getattr(module, "LabelInfo", None)


def vision_msgs_available() -> bool:
    """Whether ``vision_msgs/LabelInfo`` can be published here."""
    return label_info_type() is not None


def labels_json(labels: LabelSet, preset: str, drivable_ids: Sequence[int]) -> str:
    """The JSON document of ``segmentation/labels`` (see the module docstring)."""
    doc = {
        "format": LABELS_FORMAT,
        "preset": preset,
        "label_set": labels.name,
        "ignore_id": labels.ignore_id,
        "drivable_ids": [int(i) for i in drivable_ids],
        "classes": [
            {"id": i, "name": name, "color_rgb": list(color)}
            for i, (name, color) in enumerate(zip(labels.names, labels.colors_rgb, strict=True))
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def labels_string_msg(labels: LabelSet, preset: str, drivable_ids: Sequence[int]) -> String:
    """``std_msgs/String`` with :func:`labels_json`."""
    return String(data=labels_json(labels, preset, drivable_ids))


def label_info_msg(labels: LabelSet, header: Header) -> Any:
    """``vision_msgs/LabelInfo`` with one ``VisionClass`` per class id; raises ImportError without vision_msgs."""
    module = importlib.import_module("vision_msgs.msg")
    msg = module.LabelInfo()
    msg.header = header
    msg.class_map = [module.VisionClass(class_id=i, class_name=name) for i, name in enumerate(labels.names)]
    msg.threshold = 0.0
    return msg
