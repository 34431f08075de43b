"""The segmentation node's parameters: one table of declarations, the frozen :class:`NodeConfig` and its validation.

Every parameter is declared once in :data:`PARAMETERS` with a ``ParameterDescriptor`` (description, type, range,
``read_only`` where a change needs a restart). :func:`config_from_values` turns plain values into a validated
:class:`NodeConfig` and is pure (tested without a node); :func:`declare_parameters` and :func:`read_config` bind the
table to an rclpy node; :func:`apply_updates` validates a runtime change of the tunables (``overlay_alpha``,
``drivable_classes``, ``max_frame_age``, ``max_queue_delay``, ``stall_timeout``, ``camera_mount``) and returns the
new config. The ground outputs (``drivable_grid``, ``obstacle_points``) take ``grid_*``, ``camera_pose_source``,
``camera_mount`` (the camera's BODY frame in ``grid_frame``: x forward, y left, z up; radians, positive pitch looks
down) and ``camera_intrinsics``. Every error is a :class:`ParameterError` that names the parameter, the value and
the fix.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidTopicNameException, ParameterException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name

from espnet_ros.core.accel import BACKENDS
from espnet_ros.core.errors import EspnetRosError, WeightsError
from espnet_ros.core.geometry import CameraPose, GeometryError, GridSpec
from espnet_ros.core.labels import VOID_MEANINGS, LabelSet, UnknownClassError
from espnet_ros.core.weights import DEFAULT_PRESET, PRESETS, get_preset
from espnet_ros.qos import INPUT_QOS_CHOICES, QosError, parse_qos
from espnet_ros.scheduling import DEFAULT_MAX_QUEUE_DELAY

__all__ = [
    "PARAMETERS",
    "TUNABLE",
    "NodeConfig",
    "ParamSpec",
    "ParameterError",
    "apply_updates",
    "config_from_values",
    "declare_parameters",
    "parameter_values",
    "parse_frame_sizes",
    "read_config",
    "unknown_parameter_warnings",
]

OutputResolution = Literal["camera", "network"]
ImageTransport = Literal["raw", "compressed"]
PoseSourceName = Literal["parameters", "tf"]


class ParameterError(EspnetRosError, ValueError):
    """A parameter value that the node cannot use; the message names the parameter, the value and the fix."""


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: name, default, ROS type, description and constraints."""

    name: str
    default: Any
    type: int  # rcl_interfaces ParameterType constant
    description: str
    read_only: bool
    constraints: str = ""
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    dynamic_typing: bool = False
    lengths: tuple[int, ...] = ()  # accepted lengths of an array parameter (empty: any)
    choices: tuple[str, ...] = ()  # accepted values of a string parameter (compared lower-case; empty: any)

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        kind = {
            ParameterType.PARAMETER_STRING: "a string",
            ParameterType.PARAMETER_DOUBLE: "a floating-point number (write 1.0, not 1)",
            ParameterType.PARAMETER_INTEGER: "an integer",
            ParameterType.PARAMETER_STRING_ARRAY: "a list of strings",
            ParameterType.PARAMETER_DOUBLE_ARRAY: "a list of floating-point numbers (write 1.0, not 1)",
        }.get(self.type, "a value")
        if self.dynamic_typing:
            kind = "a list of names or integer ids"
        if self.float_range is not None:
            kind += f" in [{self.float_range[0]}, {self.float_range[1]}]"
        if self.int_range is not None:
            kind += f" in {self.int_range[0]}..{self.int_range[1]}"
        if self.lengths:
            kind += " of " + " or ".join(str(n) for n in self.lengths) + " numbers"
        if self.choices and not self.constraints:
            kind += f" ({self.choices_text()})"
        if self.constraints:
            kind += f" ({self.constraints})"
        return kind

    def choices_text(self) -> str:
        """``"a, b or c"``: the declared choices as a sentence reads them."""
        head, last = self.choices[:-1], self.choices[-1]
        return f"{', '.join(head)} or {last}" if head else last

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` this spec declares (``ros2 param describe`` shows it)."""
        d = ParameterDescriptor(
            name=self.name,
            type=ParameterType.PARAMETER_NOT_SET if self.dynamic_typing else self.type,
            description=self.description,
            additional_constraints=self.constraints or (self.choices_text() if self.choices else ""),
            read_only=self.read_only,
            dynamic_typing=self.dynamic_typing,
        )
        if self.float_range is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(self.float_range[0]), to_value=float(self.float_range[1]), step=0.0)
            ]
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=int(self.int_range[0]), to_value=int(self.int_range[1]), step=0)]
        return d


_RESTART = " Read-only: set it at start (YAML or -p); changing it needs a restart."

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "preset", DEFAULT_PRESET, ParameterType.PARAMETER_STRING,
        "Pretrained ESPNet weights preset (the model, its label set and preprocessing)." + _RESTART,
        read_only=True, choices=tuple(PRESETS),
    ),
    ParamSpec(
        "model", "", ParameterType.PARAMETER_STRING,
        "A model file to run instead of the preset: the folder `espnet-ros train` writes (OUT/best). Its manifest "
        "gives the classes, colours, default drivable classes, preprocessing and input size; its weights are "
        "sha256-checked on every load. Empty: the preset." + _RESTART,
        read_only=True,
    ),
    ParamSpec(
        "weights_dir", "", ParameterType.PARAMETER_STRING,
        "Folder holding the weights (decoder/*.pth, encoder/*.pth). Empty: $ESPNET_ROS_WEIGHTS_DIR, else "
        "~/.cache/espnet_ros/weights. Fetch them with `espnet-ros download-weights`." + _RESTART,
        read_only=True,
    ),
    ParamSpec(
        "weights_file", "", ParameterType.PARAMETER_STRING,
        "Explicit weights file for the preset (still verified by sha256). Empty: <weights_dir>/<preset file>."
        + _RESTART,
        read_only=True,
    ),
    ParamSpec(
        "device", "auto", ParameterType.PARAMETER_STRING,
        "Torch device: auto (CUDA when usable, else CPU), cpu, cuda or cuda:N." + _RESTART,
        read_only=True, constraints="auto, cpu, cuda or cuda:N",
    ),
    ParamSpec(
        "output_resolution", "camera", ParameterType.PARAMETER_STRING,
        "Resolution of every image output: camera (pixel-aligned with the input image and its CameraInfo) or "
        "network (the preset's input size, cheaper; segmentation/camera_info is scaled to match)." + _RESTART,
        read_only=True, choices=("camera", "network"),
    ),
    ParamSpec(
        "drivable_classes", ["road"], ParameterType.PARAMETER_STRING_ARRAY,
        "Classes that make up segmentation/drivable_mask, by name (case-insensitive) or id, e.g. [road] or "
        "[0, 1]. Empty: the label set's default. Tunable at runtime.",
        read_only=False, constraints="names or ids of the preset's label set", dynamic_typing=True,
    ),
    ParamSpec(
        "overlay_alpha", 0.5, ParameterType.PARAMETER_DOUBLE,
        "Weight of the class colours in segmentation/overlay and drivable_overlay (0: camera image only, "
        "1: colours only). Tunable at runtime.",
        read_only=False, float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "max_frame_age", 1.0, ParameterType.PARAMETER_DOUBLE,
        "Frames whose header stamp is older than this many seconds (by the node's clock, so use_sim_time applies) "
        "when the worker takes them are dropped and counted as stale; 0 disables the check (e.g. for bag playback "
        "without use_sim_time). Tunable at runtime.",
        read_only=False, float_range=(0.0, 3600.0),
    ),
    ParamSpec(
        "max_queue_delay", DEFAULT_MAX_QUEUE_DELAY, ParameterType.PARAMETER_DOUBLE,
        "Freshness over throughput: a frame of a streaming camera that waited longer than this many seconds for "
        "the busy worker is dropped (counted as late) and the worker takes that camera's next frame instead, so "
        "that no answer carries queueing delay. A camera is never skipped twice in a row, and a frame with no "
        "newer one due (single images, a stopped stream) is always processed. Negative: never drop for waiting "
        "(the latest frame of each camera is processed however long it waited: highest throughput). Tunable at "
        "runtime.",
        read_only=False, float_range=(-1.0, 60.0),
    ),
    ParamSpec(
        "stall_timeout", 3.0, ParameterType.PARAMETER_DOUBLE,
        "A camera that has sent no frame for this many seconds is reported as stalled (WARN) in /diagnostics. "
        "Tunable at runtime.",
        read_only=False, float_range=(0.1, 3600.0),
    ),
    ParamSpec(
        "input_qos", "sensor_data", ParameterType.PARAMETER_STRING,
        "QoS of the camera subscriptions: sensor_data (best effort, REP-2003), reliable or best_effort, optionally "
        "':DEPTH' (default 2; e.g. reliable:1). A reliable subscription does not match a best-effort camera."
        + _RESTART,
        read_only=True, constraints=", ".join(INPUT_QOS_CHOICES) + " [:DEPTH]",
    ),
    ParamSpec(
        "image_transport", "raw", ParameterType.PARAMETER_STRING,
        "raw: subscribe to sensor_msgs/Image on each camera topic; compressed: to sensor_msgs/CompressedImage "
        "(jpeg/png) on <camera topic>/compressed." + _RESTART,
        read_only=True, choices=("raw", "compressed"),
    ),
    ParamSpec(
        "cameras", ["image"], ParameterType.PARAMETER_STRING_ARRAY,
        "Image topics to segment, all in one batched forward pass. Outputs go next to each camera: "
        "/front/image_raw -> /front/segmentation/<output>, camera_info is read from /front/camera_info. The "
        "default [image] is the relative topic 'image' (remap it, or push the node into the camera's namespace)."
        + _RESTART,
        read_only=True, constraints="distinct valid topic names, at least one",
    ),
    ParamSpec(
        "num_threads", 0, ParameterType.PARAMETER_INTEGER,
        "Torch CPU threads for inference; 0 keeps torch's default (one per core)." + _RESTART,
        read_only=True, int_range=(0, 256),
    ),
    ParamSpec(
        "backend", "auto", ParameterType.PARAMETER_STRING,
        "CPU inference backend: auto (the fastest exact path measured: the network compiled ahead of time on first "
        "use and cached, else fused), eager (the network as written), fused or compiled. Every "
        "backend gives the same labels; $ESPNET_ROS_BACKEND overrides auto. On CUDA only auto and eager apply "
        "(the GPU pipeline)." + _RESTART,
        read_only=True, choices=tuple(BACKENDS),
    ),
    ParamSpec(
        "gpu_precision", "float16", ParameterType.PARAMETER_STRING,
        "Arithmetic of the network on CUDA: float16 (default; faster, agrees with float32 on >= 99.9% of pixels) or "
        "float32 (the labels of the float32 network). Ignored on the CPU, which always computes in float32."
        + _RESTART,
        read_only=True, choices=("float16", "float32"),
    ),
    ParamSpec(
        "grid_frame", "base_footprint", ParameterType.PARAMETER_STRING,
        "Frame of segmentation/drivable_grid and obstacle_points. Its z = 0 plane is the ground, and it should be "
        "rigidly attached to the camera (base_footprint, not odom or map): the per-pixel ground mapping is built "
        "once per pose and rebuilt (1-2 s) whenever the pose changes." + _RESTART,
        read_only=True, constraints="a TF frame name whose z = 0 is the ground",
    ),
    ParamSpec(
        "grid_resolution", 0.1, ParameterType.PARAMETER_DOUBLE,
        "Cell side of segmentation/drivable_grid in metres." + _RESTART,
        read_only=True, float_range=(0.01, 10.0),
    ),
    ParamSpec(
        "grid_range", 20.0, ParameterType.PARAMETER_DOUBLE,
        "The grid is a square centred on the grid_frame origin reaching this many metres in every direction "
        "(2 * grid_range / grid_resolution cells a side); ground farther than this from the point below the camera "
        "is not mapped, and obstacle points are searched up to it." + _RESTART,
        read_only=True, float_range=(1.0, 500.0),
    ),
    ParamSpec(
        "grid_min_pixels", 3, ParameterType.PARAMETER_INTEGER,
        "Mask pixels a grid cell needs before it gets a value; cells seen by fewer stay unknown (-1)." + _RESTART,
        read_only=True, int_range=(1, 32),
    ),
    ParamSpec(
        "grid_void", "unknown", ParameterType.PARAMETER_STRING,
        "What pixels of the void / unlabelled class mean for drivable_grid and obstacle_points: unknown (they count "
        "neither as drivable nor as not; a cell seen only by them stays -1, and the points walk over them) or "
        "obstacle (non-drivable). The Cityscapes networks label the ego vehicle's hood void, which would otherwise "
        "put occupied cells right in front of the camera." + _RESTART,
        read_only=True, choices=tuple(VOID_MEANINGS),
    ),
    ParamSpec(
        "camera_pose_source", "parameters", ParameterType.PARAMETER_STRING,
        "Where the camera pose in grid_frame comes from: parameters (camera_mount, the same for every camera) or "
        "tf (the transform from each image's header.frame_id, its optical frame, to grid_frame at the image's "
        "stamp; needs tf2_ros from a ROS install)." + _RESTART,
        read_only=True, choices=("parameters", "tf"),
    ),
    ParamSpec(
        "camera_mount", [0.0, 0.0, 1.5, 0.0, 0.0, 0.0], ParameterType.PARAMETER_DOUBLE_ARRAY,
        "[x, y, z, roll, pitch, yaw] of the camera BODY frame in grid_frame, as measured on the robot: metres, "
        "x forward, y left, z up (z = height of the lens above the ground); radians, pitch > 0 tilts the camera "
        "down, yaw > 0 turns it left, roll turns it about its viewing direction (the REP-103 camera_link, not "
        "the optical frame). Used when camera_pose_source is parameters. Tunable at runtime (each change "
        "rebuilds the ground mapping).",
        read_only=False, lengths=(6,), constraints="z > 0, angles in radians within [-2 pi, 2 pi]",
    ),
    ParamSpec(
        "camera_intrinsics", [], ParameterType.PARAMETER_DOUBLE_ARRAY,
        "[fx, fy, cx, cy] in pixels of the camera image (pinhole, no distortion) for the ground outputs. Empty "
        "(default): use the latest CameraInfo from the camera's camera_info topic; without either, no grid or "
        "points are published and a warning says why." + _RESTART,
        read_only=True, lengths=(0, 4), constraints="empty, or fx, fy > 0",
    ),
    ParamSpec(
        "autostart", True, ParameterType.PARAMETER_BOOL,
        "true: the node configures and activates itself at start (ros2 run, plain launch). false: it starts "
        "unconfigured and a lifecycle manager drives it (ros2 lifecycle set, nav2_lifecycle_manager with "
        "bond_timeout 0.0); see docs/lifecycle.md." + _RESTART,
        read_only=True,
    ),
    ParamSpec(
        "warmup_sizes", "", ParameterType.PARAMETER_STRING,
        "Frame sizes to run once at configure, so that the first frames of these sizes wait on no first-use work "
        "(CUDA graphs and compiled shapes on a GPU, buffers on the CPU), e.g. '2048x1024, 640x480'. Empty: none "
        "(the network itself is always built at configure)." + _RESTART,
        read_only=True, constraints="WIDTHxHEIGHT, separated by commas or spaces",
    ),
    ParamSpec(
        "jpeg_quality", 80, ParameterType.PARAMETER_INTEGER,
        "JPEG quality of segmentation/overlay/compressed, drivable_overlay/compressed and color_mask/compressed "
        "(class_mask/compressed is PNG, lossless)." + _RESTART,
        read_only=True, int_range=(1, 100),
    ),
)
"""The parameter table: every parameter of the node, declared from here and nowhere else."""

TUNABLE: frozenset[str] = frozenset(p.name for p in PARAMETERS if not p.read_only)
"""Parameters that may change while the node runs."""

_SPECS = {p.name: p for p in PARAMETERS}
_ARRAY_TYPES = frozenset({ParameterType.PARAMETER_STRING_ARRAY, ParameterType.PARAMETER_DOUBLE_ARRAY,
                          ParameterType.PARAMETER_INTEGER_ARRAY, ParameterType.PARAMETER_BOOL_ARRAY})


@dataclass(frozen=True)
class NodeConfig:
    """The node's validated configuration (see :data:`PARAMETERS` for the meaning of each field).

    ``drivable_ids`` are the resolved, sorted class ids of ``drivable_classes`` in the preset's label set.
    """

    preset: str
    weights_dir: str
    weights_file: str
    device: str
    output_resolution: OutputResolution
    drivable_classes: tuple[str, ...]
    drivable_ids: tuple[int, ...]
    overlay_alpha: float
    max_frame_age: float
    stall_timeout: float
    input_qos: str
    image_transport: ImageTransport
    cameras: tuple[str, ...]
    num_threads: int
    backend: str = "auto"
    gpu_precision: str = "float16"
    grid_frame: str = "base_footprint"
    grid_resolution: float = 0.1
    grid_range: float = 20.0
    grid_min_pixels: int = 3
    grid_void: str = "unknown"
    camera_pose_source: PoseSourceName = "parameters"
    camera_mount: tuple[float, float, float, float, float, float] = (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
    camera_intrinsics: tuple[float, ...] = ()
    max_queue_delay: float = DEFAULT_MAX_QUEUE_DELAY
    model: str = ""

    @property
    def grid_spec(self) -> GridSpec:
        """The grid layout of ``grid_range``, ``grid_resolution`` and ``grid_min_pixels``."""
        return GridSpec.from_range(self.grid_range, self.grid_resolution, min_pixels=self.grid_min_pixels)

    @property
    def camera_pose(self) -> CameraPose:
        """The optical frame's pose in ``grid_frame`` that ``camera_mount`` (body frame) describes."""
        return CameraPose.from_body_rpy(*self.camera_mount)

    def summary(self) -> str:
        """One line with every setting, for the start-up log."""
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__dataclass_fields__)


def _as_choice(name: str, value: Any) -> str:
    """A string parameter checked against the choices declared for it (lower-cased)."""
    spec = _SPECS[name]
    text = _as_str(name, value).lower()
    if text not in spec.choices:
        raise ParameterError(f"parameter {name}={text!r} is not accepted; use {spec.choices_text()} "
                             f"(default {spec.default})")
    return text


def _as_int(name: str, value: Any) -> int:
    """An integer parameter checked against the range declared for it."""
    spec = _SPECS[name]
    rng = spec.int_range
    if isinstance(value, bool) or not isinstance(value, int) or (rng is not None and not rng[0] <= value <= rng[1]):
        raise ParameterError(f"parameter {name}={value!r}; use {spec.expected()} (default {spec.default})")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"parameter {name}={value!r} must be a number; {_SPECS[name].description}")
    v = float(value)
    rng = _SPECS[name].float_range
    if rng is not None and not rng[0] <= v <= rng[1]:
        raise ParameterError(f"parameter {name}={v} is out of range; set it to a value in [{rng[0]}, {rng[1]}]")
    return v


_ARRAY_FORMS = {
    "camera_mount": "[x, y, z, roll, pitch, yaw] (metres and radians of the camera body frame in grid_frame)",
    "camera_intrinsics": "[fx, fy, cx, cy] in pixels, or [] to use the camera_info topic",
}


def _as_floats(name: str, value: Any) -> tuple[float, ...]:
    spec = _SPECS[name]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | Iterable):
        raise ParameterError(f"parameter {name}={value!r} must be {spec.expected()}")
    items = list(value)
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in items):
        raise ParameterError(f"parameter {name}={items!r} must be {spec.expected()}")
    numbers = tuple(float(v) for v in items)
    if spec.lengths and len(numbers) not in spec.lengths:
        raise ParameterError(f"parameter {name}={list(numbers)!r} has {len(numbers)} numbers; give "
                             f"{_ARRAY_FORMS.get(name, spec.expected())}")
    if not all(math.isfinite(v) for v in numbers):
        raise ParameterError(f"parameter {name}={list(numbers)!r} must hold finite numbers")
    return numbers


def _camera_mount(value: Any) -> tuple[float, float, float, float, float, float]:
    x, y, z, roll, pitch, yaw = _as_floats("camera_mount", value)
    if z <= 0:
        raise ParameterError(
            f"parameter camera_mount={[x, y, z, roll, pitch, yaw]!r} puts the camera at z = {z} m, not above the "
            "ground; z is the height of the camera above the grid_frame's ground plane, e.g. 1.5"
        )
    angles = {"roll": roll, "pitch": pitch, "yaw": yaw}
    wild = {k: v for k, v in angles.items() if abs(v) > 2 * math.pi}
    if wild:
        name, v = next(iter(wild.items()))
        raise ParameterError(
            f"parameter camera_mount has {name} = {v}, more than a full turn; angles are in radians "
            f"({v} degrees would be {math.radians(v):.4f})"
        )
    return x, y, z, roll, pitch, yaw


def _camera_intrinsics(value: Any) -> tuple[float, ...]:
    numbers = _as_floats("camera_intrinsics", value)
    if numbers and (numbers[0] <= 0 or numbers[1] <= 0):
        raise ParameterError(
            f"parameter camera_intrinsics={list(numbers)!r}: fx and fy (the first two) must be > 0 pixels; give "
            "[fx, fy, cx, cy] from the camera calibration, or [] to use the camera_info topic"
        )
    return numbers


def _grid_frame(value: Any) -> str:
    frame = _as_str("grid_frame", value).lstrip("/")
    if not frame or any(c.isspace() for c in frame):
        raise ParameterError(
            f"parameter grid_frame={value!r} is not a frame name; use the frame whose z = 0 is the ground and that "
            "moves with the camera, e.g. base_footprint"
        )
    return frame


def _grid_spec(resolution: float, max_range: float, min_pixels: int) -> None:
    try:
        GridSpec.from_range(max_range, resolution, min_pixels=min_pixels)
    except GeometryError as exc:
        raise ParameterError(
            f"parameters grid_range={max_range} and grid_resolution={resolution} give an unusable grid ({exc}); "
            "use a coarser grid_resolution or a shorter grid_range"
        ) from None


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError(f"parameter {name}={value!r} must be a string; {_SPECS[name].description}")
    return value.strip()


def _class_keys(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[Any] = [v for v in value.replace(",", " ").split()]
    elif isinstance(value, Sequence | Iterable) and not isinstance(value, bytes):
        items = list(value)
    else:
        raise ParameterError(
            f"parameter drivable_classes={value!r} must be a list of class names or ids, e.g. [road] or [0, 1]"
        )
    keys = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ParameterError(
                f"parameter drivable_classes has the entry {item!r}; expected class names or integer ids"
            )
        key = str(item).strip()
        if key:
            keys.append(key)
    return tuple(keys)


def _resolve_drivable(preset: str, keys: tuple[str, ...], model: str = "") -> tuple[int, ...]:
    if model:
        labels = _model_labels(model)
        if list(keys) == _SPECS["drivable_classes"].default:  # the default [road] means: the manifest's classes
            return labels.default_drivable
    else:
        labels = get_preset(preset).label_set
    try:
        return labels.resolve_classes(keys)
    except UnknownClassError as exc:
        raise ParameterError(f"parameter drivable_classes={list(keys)!r}: {exc}") from None


def _model_labels(model: str) -> LabelSet:
    from espnet_ros.core.modelfile import load_model

    try:
        return load_model(model).label_set
    except WeightsError as exc:
        raise ParameterError(f"parameter model={model!r}: {exc}") from None


def _cameras(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ParameterError(f"parameter cameras={value!r} must be a list of image topics, e.g. [/front/image_raw]")
    topics = tuple(str(v).strip() for v in value)
    if not topics:
        raise ParameterError("parameter cameras is empty; give at least one image topic, e.g. [image]")
    for t in topics:
        try:
            validate_topic_name(t)
        except InvalidTopicNameException as exc:
            raise ParameterError(f"parameter cameras has the invalid topic name {t!r}: {exc}") from None
        if t.endswith("/compressed"):
            raise ParameterError(
                f"parameter cameras has {t!r}; give the image topic itself (without /compressed) and set "
                "image_transport to compressed"
            )
    duplicates = sorted({t for t in topics if topics.count(t) > 1})
    if duplicates:
        raise ParameterError(f"parameter cameras lists {', '.join(duplicates)} more than once; list each camera once")
    return topics


def parse_frame_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``warmup_sizes``: ``"2048x1024, 640x480"`` → ``((2048, 1024), (640, 480))``; ``""`` → ``()``.

    Raises:
        ParameterError: an entry is not ``WIDTHxHEIGHT`` with positive integers up to 16384.
    """
    sizes = []
    for item in text.replace(",", " ").split():
        width, _, height = item.lower().partition("x")
        if not (width.isdigit() and height.isdigit() and 0 < int(width) <= 16384 and 0 < int(height) <= 16384):
            raise ParameterError(
                f"parameter warmup_sizes={text!r} has the entry {item!r}; give frame sizes as WIDTHxHEIGHT in "
                "pixels, separated by commas, e.g. '2048x1024, 640x480' (or '' for none)"
            )
        sizes.append((int(width), int(height)))
    return tuple(sizes)


def config_from_values(values: Mapping[str, Any]) -> NodeConfig:
    """Validate a mapping of parameter values (missing ones take their defaults) into a :class:`NodeConfig`.

    Raises:
        ParameterError: for unknown parameters and for any value the node cannot use, naming value and fix.
    """
    unknown = sorted(set(values) - set(_SPECS))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(_SPECS)}")
    v = {p.name: values.get(p.name, p.default) for p in PARAMETERS}

    preset = _as_str("preset", v["preset"])
    if preset not in _SPECS["preset"].choices:  # preset names are case-sensitive
        raise ParameterError(f"parameter preset={preset!r} is not a known preset; use "
                             f"{_SPECS['preset'].choices_text()}")
    model = _as_str("model", v["model"]).strip()
    if model and _as_str("weights_file", v["weights_file"]):
        raise ParameterError("parameters model and weights_file are both set; weights_file applies to presets, a "
                             "model folder names its own weights: clear one of them")
    device = _as_str("device", v["device"]).lower()
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ParameterError(f"parameter device={device!r} is not a device; use auto, cpu, cuda or cuda:N")
    resolution = _as_choice("output_resolution", v["output_resolution"])
    transport = _as_choice("image_transport", v["image_transport"])
    qos = _as_str("input_qos", v["input_qos"])
    try:
        parse_qos(qos)
    except QosError as exc:
        raise ParameterError(f"parameter input_qos: {exc}") from None
    threads = _as_int("num_threads", v["num_threads"])
    backend = _as_choice("backend", v["backend"])
    precision = _as_choice("gpu_precision", v["gpu_precision"])
    keys = _class_keys(v["drivable_classes"])
    min_pixels = _as_int("grid_min_pixels", v["grid_min_pixels"])
    grid_void = _as_choice("grid_void", v["grid_void"])
    pose_source = _as_choice("camera_pose_source", v["camera_pose_source"])
    grid_resolution = _as_float("grid_resolution", v["grid_resolution"])
    grid_range = _as_float("grid_range", v["grid_range"])
    _grid_spec(grid_resolution, grid_range, min_pixels)
    _as_int("jpeg_quality", v["jpeg_quality"])  # read by the node at configure (lifecycle, compressed outputs)
    parse_frame_sizes(_as_str("warmup_sizes", v["warmup_sizes"]))
    return NodeConfig(
        preset=preset,
        weights_dir=_as_str("weights_dir", v["weights_dir"]),
        weights_file=_as_str("weights_file", v["weights_file"]),
        device=device,
        output_resolution=resolution,  # type: ignore[arg-type]
        drivable_classes=keys,
        drivable_ids=_resolve_drivable(preset, keys, model),
        overlay_alpha=_as_float("overlay_alpha", v["overlay_alpha"]),
        max_frame_age=_as_float("max_frame_age", v["max_frame_age"]),
        stall_timeout=_as_float("stall_timeout", v["stall_timeout"]),
        input_qos=qos,
        image_transport=transport,  # type: ignore[arg-type]
        cameras=_cameras(v["cameras"]),
        num_threads=threads,
        backend=backend,
        gpu_precision=precision,
        grid_frame=_grid_frame(v["grid_frame"]),
        grid_resolution=grid_resolution,
        grid_range=grid_range,
        grid_min_pixels=min_pixels,
        grid_void=grid_void,
        camera_pose_source=pose_source,  # type: ignore[arg-type]
        camera_mount=_camera_mount(v["camera_mount"]),
        camera_intrinsics=_camera_intrinsics(v["camera_intrinsics"]),
        max_queue_delay=_as_float("max_queue_delay", v["max_queue_delay"]),
        model=model,
    )


def apply_updates(config: NodeConfig, updates: Mapping[str, Any]) -> NodeConfig:
    """Return ``config`` with runtime ``updates`` of tunable parameters applied and validated.

    Raises:
        ParameterError: an update names a read-only or unknown parameter, or has a bad value.
    """
    fields: dict[str, Any] = {}
    for name, value in updates.items():
        if name not in _SPECS:
            raise ParameterError(f"unknown parameter {name}; known: {', '.join(_SPECS)}")
        if name not in TUNABLE:
            raise ParameterError(
                f"parameter {name} is read-only while the node runs; restart the node with {name}:={value!r}"
            )
        if name == "drivable_classes":
            keys = _class_keys(value)
            fields["drivable_classes"] = keys
            fields["drivable_ids"] = _resolve_drivable(config.preset, keys, config.model)
        elif name == "camera_mount":
            fields["camera_mount"] = _camera_mount(value)
        else:
            fields[name] = _as_float(name, value)
    return replace(config, **fields)


_RCLPY_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


def unknown_parameter_warnings(names: Iterable[str]) -> list[str]:
    """One warning per name that is not a parameter of the node, naming the closest known one where there is one.

    rclpy's own parameters (``use_sim_time``, ``qos_overrides.*`` ...) are known.
    """
    known = [p.name for p in PARAMETERS]
    out = []
    for name in sorted(set(names)):
        if name in _SPECS or name in _RCLPY_PARAMETERS or name.startswith("qos_overrides."):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the parameters are: {', '.join(known)}"
        out.append(f"parameter {name} is not a parameter of this node and is ignored; {hint}")
    return out


def _overrides(node: Node) -> dict[str, Parameter]:
    """The parameter overrides given to ``node`` (command line, YAML, ``parameter_overrides=``).

    rclpy keeps them in ``Node._parameter_overrides`` and has no public accessor; an rclpy without it gives ``{}``
    (no warnings about unknown names, and an empty list override reads as unset).
    """
    overrides = getattr(node, "_parameter_overrides", None)
    return dict(overrides) if isinstance(overrides, Mapping) else {}


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` (overrides from the command line or YAML apply).

    An override that names no parameter of the node (a typo such as ``presets:=``) is warned about once, naming
    the closest parameter.

    Raises:
        ParameterError: an override has the wrong type or is out of range.
    """
    for text in unknown_parameter_warnings(_overrides(node)):
        node.get_logger().warning(text)
    for spec in PARAMETERS:
        # An empty list cannot say its type (rclpy would make it a byte array): declare the type, uninitialised.
        default = (Parameter.Type.DOUBLE_ARRAY
                   if spec.type == ParameterType.PARAMETER_DOUBLE_ARRAY and not spec.default else spec.default)
        try:
            node.declare_parameter(spec.name, default, spec.descriptor())
        except ParameterException as exc:
            raise ParameterError(f"parameter {spec.name}: {exc}. Expected {spec.expected()}.") from None


def read_config(node: Node) -> NodeConfig:
    """Read the declared parameters of ``node`` into a validated :class:`NodeConfig` (or raise ParameterError).

    An empty list on the command line (``-p cameras:=[]``) reaches rclpy without a type, and rclpy then keeps the
    default: it is read here as the empty list it is, so that it is validated (``cameras`` must not be empty).
    """
    empty_lists = {name for name, p in _overrides(node).items()
                   if p.type_ == Parameter.Type.NOT_SET and name in _SPECS
                   and _SPECS[name].type in _ARRAY_TYPES}
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        if spec.name in empty_lists:
            values[spec.name] = []
            continue
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:  # an empty array default that nobody set
            values[spec.name] = spec.default
    return config_from_values(values)


def parameter_values(parameters: Iterable[Parameter]) -> dict[str, Any]:
    """Map rclpy parameters to their plain values (the form :func:`apply_updates` takes)."""
    return {p.name: p.value for p in parameters}
