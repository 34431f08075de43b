"""rosbag2 recordings without a ROS installation: finding, reading and writing bags (MCAP and sqlite3).

This module owns every contact with the bag container, through the ``rosbags`` library (pure Python, on PyPI): which
paths are bags (a rosbag2 folder with ``metadata.yaml``, or a bare ``.mcap`` / ``.db3`` file), opening them with
errors that name the file and the fix (:class:`BagError`), listing topics, iterating messages in recorded order,
and writing a new bag whose connections carry full message definitions. Messages are serialized and deserialized by
rclpy (:func:`rclpy.serialization.serialize_message`) into the same ``sensor_msgs`` classes the node uses, so
:mod:`espnet_ros.image_codec` and the other message helpers work on recorded frames unchanged; recorded camera frames
(:func:`read_frame`) are deserialized by rosbags instead, whose pixel data is a view of the record (rclpy copies
it twice; docs/recordings.md has the measurement). Types that are not
installed (``vision_msgs/LabelInfo``, not on PyPI) are registered in a rosbags type store from their message
definition text and serialized by it. A writer refuses to fill a disk: it stops before the free space falls under a
reserve, so the bag it closes stays readable up to its last message (:class:`DiskFullError`).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from espnet_ros.core.errors import EspnetRosError, ImageError
from espnet_ros.core.labels import LabelSet
from espnet_ros.image_codec import DecodedImage, decode_compressed, decode_image

__all__ = [
    "BAG_SUFFIXES",
    "CAMERA_INFO_TYPE",
    "COMPRESSED_IMAGE_TYPE",
    "IMAGE_TYPE",
    "IMAGE_TYPES",
    "LABEL_INFO_TYPE",
    "STORAGES",
    "BagError",
    "BagFrame",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "DiskFullError",
    "Storage",
    "deserialize",
    "find_bags",
    "image_topics",
    "is_bag",
    "label_info_bytes",
    "read_frame",
    "select_image_topics",
    "stamp_ns",
    "time_msg",
    "typestore",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"
IMAGE_TYPES: dict[str, type[Image] | type[CompressedImage]] = {
    IMAGE_TYPE: Image, COMPRESSED_IMAGE_TYPE: CompressedImage,
}
"""Bag message types that hold camera frames, and the rclpy class each deserializes into."""

BAG_SUFFIXES: tuple[str, ...] = (".mcap", ".db3")
"""Bare storage files read without ``metadata.yaml``."""

Storage = Literal["mcap", "sqlite3"]
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
"""Output storage formats by name."""

_MIB = 1 << 20

# vision_msgs is not on PyPI: its two message definitions (vision_msgs 4.x, Humble and newer), as rosbag2 stores them.
_VISION_CLASS_MSG = "uint16 class_id\nstring class_name\n"
_LABEL_INFO_MSG = "std_msgs/Header header\nVisionClass[] class_map\nfloat32 threshold\n"


class BagError(EspnetRosError):
    """A bag cannot be read or written as asked (missing, corrupt, unknown topic, not an image topic)."""


class DiskFullError(BagError):
    """The output disk is (nearly) full; the output bag was closed and is readable up to its last message."""


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: its topic, type name, bag (receive) time in ns and serialized CDR bytes."""

    topic: str
    msgtype: str
    time_ns: int
    data: bytes


def stamp_ns(header: Header) -> int:
    """A header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def time_msg(time_ns: int) -> Time:
    """A ``builtin_interfaces/Time`` of ``time_ns`` nanoseconds (the inverse of :func:`stamp_ns`)."""
    return Time(sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)


def is_bag(path: Path) -> bool:
    """Whether ``path`` is a rosbag2 folder (``metadata.yaml`` inside) or a bare ``.mcap`` / ``.db3`` file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES


def find_bags(inputs: Iterable[str | Path]) -> list[Path]:
    """The bags named by ``inputs``: bags themselves, or folders whose direct children are bags (sorted).

    Raises :class:`BagError` for a missing path or a folder that holds no bag.
    """
    bags: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise BagError(f"{path} does not exist; give a rosbag2 folder (with metadata.yaml), an .mcap or .db3 "
                           "file, or a folder of them")
        if is_bag(path):
            bags.append(path)
            continue
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if is_bag(p))
            if not found:
                raise BagError(f"{path} is neither a bag nor a folder of bags (no metadata.yaml, .mcap or .db3 "
                               "inside)")
            bags.extend(found)
            continue
        raise BagError(f"{path} is not a bag; expected a rosbag2 folder, an .mcap or a .db3 file")
    return list(dict.fromkeys(bags))


class BagReader:
    """Read one bag (rosbag2 folder or bare ``.mcap`` / ``.db3`` file); use as a context manager.

    ``topics`` maps each topic to its type name, ``counts`` to its message count (``None`` where the storage does
    not say). Every failure of the container (missing, truncated, corrupt) is a :class:`BagError` naming the bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self._reader: Any = None
        self.connections: list[Connection] = []

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Open the bag and read its index."""
        if self.path.is_dir():
            reader: Any = Reader(self.path)
        elif self.path.suffix.lower() == ".mcap":
            reader = McapReader(self.path)
        elif self.path.suffix.lower() == ".db3":
            reader = Sqlite3Reader(self.path)
        else:
            raise BagError(f"{self.path} is not a bag; expected a rosbag2 folder, an .mcap or a .db3 file")
        try:
            reader.open()
        except (ReaderError, OSError, sqlite3.Error, ValueError, KeyError, IndexError, EOFError) as exc:
            raise BagError(self._corrupt(exc)) from exc
        self._reader = reader
        self.connections = list(reader.connections)

    def _corrupt(self, exc: BaseException) -> str:
        return (f"cannot read bag {self.path}: {exc or type(exc).__name__} (the file is truncated, corrupt or not a "
                "rosbag2 recording; a recording cut short by a crash can be repaired with `ros2 bag reindex`)")

    def close(self) -> None:
        """Close the bag (safe to call twice)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> message type name."""
        return {c.topic: c.msgtype for c in self.connections}

    @property
    def counts(self) -> dict[str, int]:
        """Topic name -> number of messages recorded on it (0 where the storage keeps no count)."""
        counts: dict[str, int] = {}
        for c in self.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount or 0)
        return counts

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages on ``topics`` (all when ``None``) in recorded order; :class:`BagError` if the data is corrupt."""
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        wanted = None if topics is None else set(topics)
        connections = [c for c in self.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        try:
            for connection, time_ns, data in self._reader.messages(connections):
                yield BagMessage(connection.topic, connection.msgtype, int(time_ns), bytes(data))
        except (ReaderError, OSError, sqlite3.Error, ValueError, KeyError, IndexError, EOFError) as exc:
            raise BagError(self._corrupt(exc)) from exc

    def connection(self, topic: str) -> Connection:
        """The (first) connection of ``topic``."""
        for c in self.connections:
            if c.topic == topic:
                return c
        raise BagError(self._missing([topic]))

    def _missing(self, missing: Sequence[str]) -> str:
        known = ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "none"
        return f"bag {self.path} has no topic {', '.join(missing)}; its topics are: {known}"


def image_topics(reader: BagReader) -> list[str]:
    """The topics of ``reader`` that hold ``sensor_msgs/Image`` or ``CompressedImage`` messages, sorted."""
    return sorted(t for t, m in reader.topics.items() if m in IMAGE_TYPES)


def select_image_topics(reader: BagReader, topics: Sequence[str] | None) -> list[str]:
    """The image topics to process: ``topics`` checked against the bag, or all of its image topics.

    Raises :class:`BagError` naming the topics that do not exist (and listing those that do), the topics that are
    not images (with their types), or a bag without any image topic.
    """
    available = reader.topics
    if not topics:
        found = image_topics(reader)
        if not found:
            raise BagError(f"bag {reader.path} has no sensor_msgs/Image or CompressedImage topic; its topics are: "
                           + (", ".join(f"{t} ({m})" for t, m in sorted(available.items())) or "none"))
        return found
    missing = [t for t in topics if t not in available]
    if missing:
        raise BagError(reader._missing(missing))
    not_images = [f"{t} is {available[t]}" for t in topics if available[t] not in IMAGE_TYPES]
    if not_images:
        raise BagError(f"bag {reader.path}: {', '.join(not_images)}, not sensor_msgs/msg/Image or CompressedImage; "
                       f"its image topics are: {', '.join(image_topics(reader)) or 'none'}")
    return list(dict.fromkeys(topics))


def deserialize(message: BagMessage) -> Any:
    """The rclpy message of an image or CameraInfo record (raises :class:`BagError` for other types)."""
    cls: Any = IMAGE_TYPES.get(message.msgtype) or (CameraInfo if message.msgtype == CAMERA_INFO_TYPE else None)
    if cls is None:
        raise BagError(f"{message.topic}: cannot deserialize type {message.msgtype}")
    return deserialize_message(message.data, cls)


@dataclass(frozen=True)
class BagFrame:
    """A recorded camera frame, deserialized but not yet decoded."""

    topic: str
    time_ns: int
    msgtype: str
    header: Header
    """The frame's header as an rclpy ``std_msgs/Header`` (what the outputs carry)."""
    message: Any
    """The record as rosbags deserializes it: the fields of the ROS message, ``data`` a NumPy view of the record."""

    def decode(self) -> DecodedImage:
        """The frame's pixels (:func:`~espnet_ros.image_codec.decode_image` or ``decode_compressed``).

        Raises :class:`~espnet_ros.core.errors.ImageError` for a frame the codec refuses.
        """
        if self.msgtype == COMPRESSED_IMAGE_TYPE:
            return decode_compressed(self.message)
        return decode_image(self.message)


def read_frame(message: BagMessage) -> BagFrame:
    """Deserialize the Image or CompressedImage record ``message`` (its pixels are not copied).

    Raises :class:`~espnet_ros.core.errors.ImageError` naming the type and the cause for a record that does not
    deserialize (a corrupt or truncated record) and :class:`BagError` for a record of another type.
    """
    if message.msgtype not in IMAGE_TYPES:
        raise BagError(f"{message.topic}: {message.msgtype} is not sensor_msgs/msg/Image or CompressedImage")
    try:
        msg: Any = typestore().deserialize_cdr(message.data, message.msgtype)
    except (SerdeError, ValueError, IndexError) as exc:
        raise ImageError(f"cannot deserialize {message.msgtype}: {exc}") from exc
    h = msg.header
    header = Header(stamp=Time(sec=int(h.stamp.sec), nanosec=int(h.stamp.nanosec)), frame_id=str(h.frame_id))
    return BagFrame(message.topic, message.time_ns, message.msgtype, header, msg)


def _typestore() -> Typestore:
    store = get_typestore(Stores.ROS2_KILTED)
    types = get_types_from_msg(_VISION_CLASS_MSG, "vision_msgs/msg/VisionClass")
    types.update(get_types_from_msg(_LABEL_INFO_MSG, LABEL_INFO_TYPE))
    store.register(types)
    return store


_STORE: Typestore | None = None


def typestore() -> Typestore:
    """The rosbags type store of ROS 2 Kilted plus ``vision_msgs/LabelInfo`` (message definitions for writing)."""
    global _STORE
    if _STORE is None:
        _STORE = _typestore()
    return _STORE


def label_info_bytes(labels: LabelSet, header: Header) -> bytes:
    """A serialized ``vision_msgs/LabelInfo`` with one ``VisionClass`` per class id (as the node publishes it)."""
    store = typestore()
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
    msg = types[LABEL_INFO_TYPE](
        header=types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(header.frame_id)),
        class_map=[types["vision_msgs/msg/VisionClass"](class_id=i, class_name=name)
                   for i, name in enumerate(labels.names)],
        threshold=0.0,
    )
    return bytes(store.serialize_cdr(msg, LABEL_INFO_TYPE))


class BagWriter:
    """Write a new bag; use as a context manager (closing writes the index and ``metadata.yaml``).

    Args:
        path: the bag folder to create (must not exist).
        storage: ``mcap`` (default) or ``sqlite3``.
        reserve_mb: stop with :class:`DiskFullError` before a write would leave less than this many MiB free on the
            output disk, so that the bag can still be closed and stays readable up to its last message.

    Messages are rclpy messages (serialized here) or already serialized bytes (:meth:`write_raw`).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", *, reserve_mb: float = 64.0) -> None:
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; expected {' or '.join(STORAGES)}")
        self.path = Path(path).expanduser()
        self.storage = storage
        self.reserve_bytes = int(reserve_mb * _MIB)
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Connection] = {}
        self.written = 0
        self.last_time_ns: int | None = None
        self._pending = 0  # bytes written since the last free-space check
        self._closed = False

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Create the bag folder and its storage file."""
        try:
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create output bag {self.path}: {exc}") from exc

    def add_topic(self, topic: str, msgtype: str, *, msgdef: str | None = None, digest: str | None = None,
                  latched: bool = False) -> None:
        """Declare ``topic`` of type ``msgtype`` (definition from the type store unless ``msgdef``/``digest``)."""
        if topic in self._connections:
            return
        qos = [_latched_qos()] if latched else []
        try:
            if msgdef is not None and digest:
                conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest,
                                                   offered_qos_profiles=qos)
            else:
                conn = self._writer.add_connection(topic, msgtype, typestore=typestore(), offered_qos_profiles=qos)
        except (WriterError, KeyError) as exc:
            raise BagError(f"cannot add topic {topic} ({msgtype}) to {self.path}: {exc}") from exc
        self._connections[topic] = conn

    def write(self, topic: str, time_ns: int, msg: Any) -> None:
        """Serialize the rclpy message ``msg`` and write it at bag time ``time_ns`` on a declared topic."""
        self.write_raw(topic, time_ns, serialize_message(msg))

    def write_raw(self, topic: str, time_ns: int, data: bytes) -> None:
        """Write serialized CDR bytes at bag time ``time_ns`` on a declared topic."""
        self._pending += len(data)
        if self._pending > 4 * _MIB:
            self._check_space(self._pending)
            self._pending = 0
        try:
            self._writer.write(self._connections[topic], int(time_ns), data)
        except (OSError, sqlite3.Error) as exc:
            raise BagError(self._failed(exc)) from exc
        self.written += 1
        self.last_time_ns = int(time_ns)

    def _failed(self, exc: BaseException) -> str:
        return (f"writing {self.path} failed after {self.written} message(s): {exc}; the bag is incomplete and may "
                "not be readable (free space on its disk and run again with --overwrite)")

    def _check_space(self, upcoming: int) -> None:
        free = shutil.disk_usage(self.path).free
        if free - upcoming < self.reserve_bytes:
            raise DiskFullError(
                f"the disk of {self.path} is nearly full ({free / _MIB:.0f} MiB free, {self.reserve_bytes / _MIB:.0f}"
                f" MiB kept in reserve): stopped after {self.written} message(s); the bag is closed and readable up "
                f"to its last message{self._last()}. Free space and run again with --overwrite"
            )

    def _last(self) -> str:
        if self.last_time_ns is None:
            return ""
        return f" (bag time {self.last_time_ns // 1_000_000_000}.{self.last_time_ns % 1_000_000_000:09d})"

    def check_space(self, upcoming: int = 0) -> None:
        """Raise :class:`DiskFullError` if writing ``upcoming`` bytes would eat into the reserve."""
        self._check_space(upcoming)

    def close(self) -> None:
        """Write the index and ``metadata.yaml`` (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        if self._writer.storage is None:
            return
        try:
            self._writer.close()
        except (OSError, sqlite3.Error, WriterError) as exc:
            raise BagError(self._failed(exc)) from exc


def _latched_qos() -> Any:
    """The offered QoS of a latched topic (reliable, transient local, keep last 1), as rosbag2 records it."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL, deadline=never, lifespan=never,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)
