"""``espnet-ros bench``: how fast the model, the whole pipeline and the ROS node are, measured against a baseline.

This module owns the benchmark tool (a tool, not a test). Every run measures, in the same process and on the same
frames, the upstream recipe as written (:class:`~espnet_ros.core.baseline.BaselinePipeline`: numpy preprocessing,
eager fp32 NCHW network, ``argmax``, numpy resize) and the fast path (:class:`~espnet_ros.core.segmenter.Segmenter`
with its CPU backend), interleaving the two so that a busy machine slows both alike, and reports medians, the
speedup and the fraction of camera pixels whose label agrees with the baseline. ``--mode model`` adds the network
alone on a preprocessed tensor for every CPU backend; ``pipeline`` adds the per-stage split and the colour mask and
overlay; ``ros`` runs image_player-style camera processes (one per camera, :func:`publisher_main`) and
``segmentation_node`` as subprocesses and listens in this process: latency from header stamp to receipt,
throughput, frames dropped by the node on purpose and lost between processes, stamps checked against the frames
sent, node RSS. ``--device cuda`` hands over to
:mod:`espnet_ros.bench.cuda`. It prints a table, writes JSON with ``--json`` and shows progress on stderr.

The subpackage: :mod:`~espnet_ros.bench.harness` (frames, interleaved timing), :mod:`~espnet_ros.bench.inprocess`
(model, pipeline and CamVid modes), :mod:`~espnet_ros.bench.ros` (the ROS mode and its camera process),
:mod:`~espnet_ros.bench.cuda` (the CUDA mode), :mod:`~espnet_ros.bench.report` (the table) and
:mod:`~espnet_ros.bench.command` (the arguments and the run). Each imports only those before it in that list.
"""

from __future__ import annotations

from espnet_ros.bench.command import main, run
from espnet_ros.bench.harness import BenchError
from espnet_ros.bench.inprocess import measure_camvid, measure_model, measure_pipeline
from espnet_ros.bench.report import format_table
from espnet_ros.bench.ros import published_stamps, publisher_main, run_ros, unknown_stamps

__all__ = [
           "BenchError",
           "format_table",
           "main",
           "measure_camvid",
           "measure_model",
           "measure_pipeline",
           "published_stamps",
           "publisher_main",
           "run",
           "run_ros",
           "unknown_stamps",
]
