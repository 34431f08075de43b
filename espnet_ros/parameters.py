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
from espnet_ros.core.labels import VOID_MEANINGS, UnknownClassError
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
    "read_config",
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
        if self.constraints:
            kind += f" ({self.constraints})"
        return kind

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` this spec declares (``ros2 param describe`` shows it)."""
        d = ParameterDescriptor(
            name=self.name,
            type=ParameterType.PARAMETER_NOT_SET if self.dynamic_typing else self.type,
            description=self.description,
            additional_constraints=self.constraints,
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
        read_only=True, constraints="one of: " + ", ".join(PRESETS),
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
        read_only=True, constraints="camera or network",
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
        read_only=True, constraints="raw or compressed",
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
        "use and cached, else fused), eager (the network as written), fused, compiled or onnxruntime. Every "
        "backend gives the same labels; $ESPNET_ROS_BACKEND overrides auto. On CUDA only auto and eager apply "
        "(the GPU pipeline)." + _RESTART,
        read_only=True, constraints="auto, eager, fused, compiled or onnxruntime",
    ),
    ParamSpec(
        "gpu_precision", "float16", ParameterType.PARAMETER_STRING,
        "Arithmetic of the network on CUDA: float16 (default; faster, agrees with float32 on >= 99.9% of pixels) or "
        "float32 (the labels of the float32 network). Ignored on the CPU, which always computes in float32."
        + _RESTART,
        read_only=True, constraints="float16 or float32",
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
        read_only=True, constraints="unknown or obstacle",
    ),
    ParamSpec(
        "camera_pose_source", "parameters", ParameterType.PARAMETER_STRING,
        "Where the camera pose in grid_frame comes from: parameters (camera_mount, the same for every camera) or "
        "tf (the transform from each image's header.frame_id, its optical frame, to grid_frame at the image's "
        "stamp; needs tf2_ros from a ROS install)." + _RESTART,
        read_only=True, constraints="parameters or tf",
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
)
"""The parameter table: every parameter of the node, declared from here and nowhere else."""

TUNABLE: frozenset[str] = frozenset(p.name for p in PARAMETERS if not p.read_only)
"""Parameters that may change while the node runs."""

_SPECS = {p.name: p for p in PARAMETERS}


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


def _resolve_drivable(preset: str, keys: tuple[str, ...]) -> tuple[int, ...]:
    labels = get_preset(preset).label_set
    try:
        return labels.resolve_classes(keys)
    except UnknownClassError as exc:
        raise ParameterError(f"parameter drivable_classes={list(keys)!r}: {exc}") from None


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
    try:
        get_preset(preset)
    except WeightsError:
        raise ParameterError(f"parameter preset={preset!r} is not a known preset; use one of: {', '.join(PRESETS)}"
                             ) from None
    device = _as_str("device", v["device"]).lower()
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ParameterError(f"parameter device={device!r} is not a device; use auto, cpu, cuda or cuda:N")
    resolution = _as_str("output_resolution", v["output_resolution"]).lower()
    if resolution not in ("camera", "network"):
        raise ParameterError(f"parameter output_resolution={resolution!r}; use camera or network")
    transport = _as_str("image_transport", v["image_transport"]).lower()
    if transport not in ("raw", "compressed"):
        raise ParameterError(f"parameter image_transport={transport!r}; use raw or compressed")
    qos = _as_str("input_qos", v["input_qos"])
    try:
        parse_qos(qos)
    except QosError as exc:
        raise ParameterError(f"parameter input_qos: {exc}") from None
    threads = v["num_threads"]
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 256:
        raise ParameterError(f"parameter num_threads={threads!r}; use an integer in 0..256 (0: torch's default)")
    backend = _as_str("backend", v["backend"]).strip().lower()
    if backend not in BACKENDS:
        raise ParameterError(f"parameter backend={backend!r}; use one of {', '.join(BACKENDS)} (default auto)")
    precision = _as_str("gpu_precision", v["gpu_precision"]).strip().lower()
    if precision not in ("float16", "float32"):
        raise ParameterError(f"parameter gpu_precision={precision!r}; use float16 (default) or float32")
    keys = _class_keys(v["drivable_classes"])
    min_pixels = v["grid_min_pixels"]
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or not 1 <= min_pixels <= 32:
        raise ParameterError(f"parameter grid_min_pixels={min_pixels!r}; use an integer in 1..32 (default 3)")
    grid_void = _as_str("grid_void", v["grid_void"]).lower()
    if grid_void not in VOID_MEANINGS:
        raise ParameterError(f"parameter grid_void={grid_void!r}; use unknown (default) or obstacle")
    pose_source = _as_str("camera_pose_source", v["camera_pose_source"]).lower()
    if pose_source not in ("parameters", "tf"):
        raise ParameterError(f"parameter camera_pose_source={pose_source!r}; use parameters (camera_mount) or tf")
    grid_resolution = _as_float("grid_resolution", v["grid_resolution"])
    grid_range = _as_float("grid_range", v["grid_range"])
    _grid_spec(grid_resolution, grid_range, int(min_pixels))
    return NodeConfig(
        preset=preset,
        weights_dir=_as_str("weights_dir", v["weights_dir"]),
        weights_file=_as_str("weights_file", v["weights_file"]),
        device=device,
        output_resolution=resolution,  # type: ignore[arg-type]
        drivable_classes=keys,
        drivable_ids=_resolve_drivable(preset, keys),
        overlay_alpha=_as_float("overlay_alpha", v["overlay_alpha"]),
        max_frame_age=_as_float("max_frame_age", v["max_frame_age"]),
        stall_timeout=_as_float("stall_timeout", v["stall_timeout"]),
        input_qos=qos,
        image_transport=transport,  # type: ignore[arg-type]
        cameras=_cameras(v["cameras"]),
        num_threads=int(threads),
        backend=backend,
        gpu_precision=precision,
        grid_frame=_grid_frame(v["grid_frame"]),
        grid_resolution=grid_resolution,
        grid_range=grid_range,
        grid_min_pixels=int(min_pixels),
        grid_void=grid_void,
        camera_pose_source=pose_source,  # type: ignore[arg-type]
        camera_mount=_camera_mount(v["camera_mount"]),
        camera_intrinsics=_camera_intrinsics(v["camera_intrinsics"]),
        max_queue_delay=_as_float("max_queue_delay", v["max_queue_delay"]),
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
            fields["drivable_ids"] = _resolve_drivable(config.preset, keys)
        elif name == "camera_mount":
            fields["camera_mount"] = _camera_mount(value)
        else:
            fields[name] = _as_float(name, value)
    return replace(config, **fields)


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` (overrides from the command line or YAML apply).

    Raises:
        ParameterError: an override has the wrong type or is out of range.
    """
    for spec in PARAMETERS:
        # An empty list cannot say its type (rclpy would make it a byte array): declare the type, uninitialised.
        default = (Parameter.Type.DOUBLE_ARRAY
                   if spec.type == ParameterType.PARAMETER_DOUBLE_ARRAY and not spec.default else spec.default)
        try:
            node.declare_parameter(spec.name, default, spec.descriptor())
        except ParameterException as exc:
            raise ParameterError(f"parameter {spec.name}: {exc}. Expected {spec.expected()}.") from None


def read_config(node: Node) -> NodeConfig:
    """Read the declared parameters of ``node`` into a validated :class:`NodeConfig` (or raise ParameterError)."""
    values = {}
    for spec in PARAMETERS:
        try:
            values[spec.name] = node.get_parameter(spec.name).value
        except ParameterUninitializedException:  # an empty array default that nobody set
            values[spec.name] = spec.default
    return config_from_values(values)


def parameter_values(parameters: Iterable[Parameter[Any]]) -> dict[str, Any]:
    """Map rclpy parameters to their plain values (the form :func:`apply_updates` takes)."""
    return {p.name: p.value for p in parameters}
