"""The CUDA fast path: uint8 frames in pinned host memory to uint8 class ids in host memory, graphs replayed.

:class:`GpuPipeline` runs the whole per-frame path on the device: the upload from pinned staging buffers without
blocking, the weights' preprocessing from uint8 (float resize, per-channel affine), the network in half precision
with channels-last where asked, argmax (``max(1)[1]``) and the nearest resize to the camera resolution with pixel
centres aligned, and copies back only uint8 class ids (and confidence when asked). On CUDA the network is compiled
with ``torch.compile`` (Inductor fuses each convolution's batch norm, PReLU, the ESP sums and concatenations into a
few Triton kernels; without Triton, or if compiling fails, the network runs as it is and the log says why), and the
compute is captured once per :class:`GraphKey` (batch size, frame shapes, colour orders, outputs) into a CUDA graph
and replayed; the cache is bounded (least recently used graphs are freed). The same code runs eagerly on the CPU,
which is how its logic is tested on machines without a GPU. It knows nothing of ROS.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from espnet_ros.core.model import upsample_logits
from espnet_ros.core.preprocess import frame_tensor, preprocess_tensors
from espnet_ros.core.weights import WeightsPreset

__all__ = ["GpuPipeline", "GraphKey", "PipelineOutput", "confidence_u8", "nearest_indices"]

_log = logging.getLogger(__name__)

OutputMode = Literal["input", "network"]


@dataclass(frozen=True)
class GraphKey:
    """Everything a captured graph depends on; a different key never reuses a graph.

    Attributes:
        device: the torch device string (``cuda:0``).
        batch: number of frames.
        frame_shapes: ``(height, width)`` of each frame, in batch order.
        color_orders: ``bgr`` / ``rgb`` of each frame.
        output_sizes: ``(width, height)`` of each frame's class ids.
        confidence: whether confidence maps are computed.
        half: whether the network runs in float16.
    """

    device: str
    batch: int
    frame_shapes: tuple[tuple[int, int], ...]
    color_orders: tuple[str, ...]
    output_sizes: tuple[tuple[int, int], ...]
    confidence: bool
    half: bool


@dataclass(frozen=True)
class PipelineOutput:
    """Per-frame result of :meth:`GpuPipeline.run`: ``(H_out, W_out) uint8`` ids and optional confidence."""

    class_ids: npt.NDArray[np.uint8]
    confidence: npt.NDArray[np.uint8] | None


@dataclass
class _Plan:
    """Static buffers (and, on CUDA, the captured graph) of one :class:`GraphKey`."""

    host_in: list[torch.Tensor]
    dev_in: list[torch.Tensor]
    dev_out: list[torch.Tensor] = field(default_factory=list)
    dev_conf: list[torch.Tensor] = field(default_factory=list)
    host_out: list[torch.Tensor] = field(default_factory=list)
    host_conf: list[torch.Tensor] = field(default_factory=list)
    graph: torch.cuda.CUDAGraph | None = None


def confidence_u8(logits: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Max softmax probability over dim 1 as uint8 0..255, from logits and their max: ``255 / sum(exp(l - max))``."""
    return (255.0 / torch.exp(logits - best.unsqueeze(1)).sum(1)).round_().to(torch.uint8)


@functools.lru_cache(maxsize=32)
def nearest_indices(src: int, dst: int) -> npt.NDArray[np.intp]:
    """Source index of each destination index for a nearest resize with pixel centres aligned (read-only)."""
    idx = np.floor((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst)).astype(np.intp)
    idx.setflags(write=False)
    return idx


def _reason(exc: BaseException) -> str:
    """One line naming the root cause of a (possibly wrapped) exception: ``Type: first line of its message``."""
    # torch's compile errors keep the compiler's own exception as inner_exception (and not always as __cause__)
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class GpuPipeline:
    """Whole-frame segmentation on one torch device, with CUDA graphs cached per :class:`GraphKey`.

    Args:
        model: the network (eval mode, weights loaded); it is copied, the original is left as it is.
        preset: the weights preset (preprocessing constants, output stride).
        network_size: network input ``(width, height)``.
        device: where to run (``cuda:N``, or ``cpu`` for tests of the logic).
        half: run the network in float16 (default: on CUDA).
        channels_last: use the channels-last memory format (default: on CUDA in float16; in float32 NCHW was
            faster on an H200, 519 vs 306 frames/s at batch 1, see docs/performance.md).
        graphs: capture and replay CUDA graphs (default: on CUDA; impossible on the CPU).
        max_graphs: how many captured graphs to keep (least recently used are freed).
        compile: compile the network with ``torch.compile`` (default: on CUDA when Triton is installed). If compiling
            fails, the network runs uncompiled and a warning says why (:attr:`compiled` turns false).
        compile_backend: the ``torch.compile`` backend (``inductor``; tests pass others).
    """

    def __init__(
        self,
        model: nn.Module,
        preset: WeightsPreset,
        network_size: tuple[int, int],
        device: torch.device,
        *,
        half: bool | None = None,
        channels_last: bool | None = None,
        graphs: bool | None = None,
        max_graphs: int = 8,
        compile: bool | None = None,
        compile_backend: str | Callable[..., object] = "inductor",
    ) -> None:
        on_cuda = device.type == "cuda"
        self.device = device
        self.half = on_cuda if half is None else bool(half)
        self.channels_last = (on_cuda and self.half) if channels_last is None else bool(channels_last)
        self.graphs = on_cuda if graphs is None else bool(graphs)
        if self.graphs and not on_cuda:
            raise ValueError("CUDA graphs need a CUDA device; pass graphs=False on the CPU")
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        self.max_graphs = max_graphs
        self.preset = preset
        self.network_size = network_size
        net = copy.deepcopy(model).eval().to(device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.half:
            net = net.half()
        self._net = net
        self.compiled = (on_cuda and importlib.util.find_spec("triton") is not None) if compile is None else bool(
            compile
        )
        self._network: Callable[[torch.Tensor], torch.Tensor] = net
        if self.compiled:
            # one compiled graph per input shape (dynamic=False): each GraphKey's batch is captured once anyway
            self._network = torch.compile(net, backend=compile_backend, dynamic=False)  # type: ignore[assignment]
        gain, offset = preset.preprocessing.affine()
        self._gain = torch.from_numpy(gain).to(device).view(1, 3, 1, 1)
        self._offset = torch.from_numpy(offset).to(device).view(1, 3, 1, 1)
        self._plans: OrderedDict[GraphKey, _Plan] = OrderedDict()
        self._index_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.captures = 0
        self.replays = 0
        self._stream = torch.cuda.Stream(device) if on_cuda else None

    def key(
        self,
        shapes: Sequence[tuple[int, int]],
        orders: Sequence[str],
        output_sizes: Sequence[tuple[int, int]],
        confidence: bool,
    ) -> GraphKey:
        """The cache key of a call with frames of these ``(height, width)`` shapes, orders and outputs."""
        return GraphKey(
            device=str(self.device),
            batch=len(shapes),
            frame_shapes=tuple((int(h), int(w)) for h, w in shapes),
            color_orders=tuple(orders),
            output_sizes=tuple((int(w), int(h)) for w, h in output_sizes),
            confidence=bool(confidence),
            half=self.half,
        )

    @property
    def cached_keys(self) -> list[GraphKey]:
        """The keys with a plan (captured graph on CUDA), least recently used first."""
        return list(self._plans)

    def _index(self, src: int, dst: int) -> torch.Tensor:
        k = (src, dst)
        idx = self._index_cache.get(k)
        if idx is None:
            idx = torch.from_numpy(nearest_indices(src, dst).astype(np.int64)).to(self.device)
            self._index_cache[k] = idx
        return idx

    def preprocess(self, frames: Sequence[torch.Tensor], orders: Sequence[str]) -> torch.Tensor:
        """``(H, W, 3) uint8`` device tensors → network input ``(N, 3, h, w)`` (float16 when :attr:`half`).

        The values are :func:`~espnet_ros.core.preprocess.preprocess_tensors`' (the CPU path's counterpart).
        """
        x = preprocess_tensors(frames, orders, self.network_size, self._gain, self._offset)
        if self.half:
            x = x.half()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def compute(
        self, frames: Sequence[torch.Tensor], key: GraphKey
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The captured computation: device uint8 frames → per-frame uint8 ids (and confidence) at output size."""
        x = self.preprocess(frames, key.color_orders)
        logits = self._network(x)
        if self.preset.output_stride != 1:
            logits = upsample_logits(logits.float(), self.preset.output_stride)
        best, ids = logits.max(1)
        ids8 = ids.to(torch.uint8)
        conf8 = None
        if key.confidence:
            conf8 = confidence_u8(logits.float(), best.float())
        h, w = int(ids8.shape[1]), int(ids8.shape[2])
        outs, confs = [], []
        for i, (ow, oh) in enumerate(key.output_sizes):
            maps = [ids8[i]] + ([conf8[i]] if conf8 is not None else [])
            resized = []
            for m in maps:
                if (ow, oh) != (w, h):
                    m = m.index_select(0, self._index(h, oh)).index_select(1, self._index(w, ow))
                resized.append(m.contiguous())
            outs.append(resized[0])
            if conf8 is not None:
                confs.append(resized[1])
        return outs, confs

    @property
    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network as it runs: compiled when :attr:`compiled`, else the device copy (precision and layout set)."""
        return self._network

    def _compute_or_fall_back(
        self, frames: Sequence[torch.Tensor], key: GraphKey
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """:meth:`compute`; if the compiled network fails (it compiles on first use), again with the uncompiled one."""
        try:
            return self.compute(frames, key)
        except Exception as exc:  # torch.compile raises many kinds (backend, lowering, Triton, C compiler)
            if not self.compiled:
                raise
            _log.warning("torch.compile of the network failed (%s); running it uncompiled", _reason(exc))
            self.compiled = False
            self._network = self._net
            return self.compute(frames, key)

    def _new_plan(self, key: GraphKey) -> _Plan:
        pin = self.device.type == "cuda"
        host_in = [torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=pin) for h, w in key.frame_shapes]
        dev_in = [torch.empty((h, w, 3), dtype=torch.uint8, device=self.device) for h, w in key.frame_shapes]
        plan = _Plan(host_in=host_in, dev_in=dev_in)
        if self.compiled:
            w, h = self.network_size
            _log.info("new frame shapes %s: the network is compiled for input (%d, 3, %d, %d) unless it was "
                      "already (once per batch size; can take a minute)", list(key.frame_shapes), key.batch, h, w)
        if self.graphs:
            assert self._stream is not None
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream), torch.inference_mode():
                for _ in range(2):  # warm up (compilation, cuDNN autotuning, lazy allocations) outside the graph
                    self._compute_or_fall_back(dev_in, key)
            torch.cuda.current_stream(self.device).wait_stream(self._stream)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
                plan.dev_out, plan.dev_conf = self.compute(dev_in, key)
            plan.graph = graph
            self.captures += 1
            plan.host_out = [torch.empty(t.shape, dtype=torch.uint8, pin_memory=True) for t in plan.dev_out]
            plan.host_conf = [torch.empty(t.shape, dtype=torch.uint8, pin_memory=True) for t in plan.dev_conf]
        return plan

    def _plan(self, key: GraphKey) -> _Plan:
        plan = self._plans.get(key)
        if plan is None:
            plan = self._new_plan(key)
            self._plans[key] = plan
            while len(self._plans) > self.max_graphs:
                old, _ = self._plans.popitem(last=False)
                _log.debug("freed the graph of %s", old)
        else:
            self._plans.move_to_end(key)
        return plan

    def run(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        orders: Sequence[str],
        output_sizes: Sequence[tuple[int, int]],
        confidence: bool = False,
    ) -> list[PipelineOutput]:
        """Segment validated ``(H, W, 3) uint8`` frames; one forward pass for all of them."""
        key = self.key([im.shape[:2] for im in images], orders, output_sizes, confidence)
        plan = self._plan(key)
        with torch.inference_mode():
            if self.device.type != "cuda":
                frames = [frame_tensor(im) for im in images]
                outs, confs = self._compute_or_fall_back(frames, key)
                return [
                    PipelineOutput(o.numpy(), confs[i].numpy() if confs else None) for i, o in enumerate(outs)
                ]
            stream = torch.cuda.current_stream(self.device)
            for im, host, dev in zip(images, plan.host_in, plan.dev_in, strict=True):
                host.numpy()[...] = im
                dev.copy_(host, non_blocking=True)
            if plan.graph is not None:
                plan.graph.replay()
                self.replays += 1
                dev_out, dev_conf = plan.dev_out, plan.dev_conf
                host_out, host_conf = plan.host_out, plan.host_conf
            else:
                dev_out, dev_conf = self._compute_or_fall_back(plan.dev_in, key)
                host_out = [torch.empty(t.shape, dtype=torch.uint8, pin_memory=True) for t in dev_out]
                host_conf = [torch.empty(t.shape, dtype=torch.uint8, pin_memory=True) for t in dev_conf]
            for d, h in zip(dev_out + dev_conf, host_out + host_conf, strict=True):
                h.copy_(d, non_blocking=True)
            stream.synchronize()
            return [
                PipelineOutput(
                    host_out[i].numpy().copy(), host_conf[i].numpy().copy() if host_conf else None
                )
                for i in range(len(images))
            ]
