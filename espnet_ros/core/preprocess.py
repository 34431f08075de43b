"""The weights' preprocessing as the fast paths run it: one CPU function and its one torch (GPU) counterpart.

The recipe belongs to the weights (:class:`~espnet_ros.core.weights.Preprocessing`): BGR channels, a bilinear
resize to the network size, then per channel ``(x - mean) / std / 255``. Upstream maps the full frame first and
then resizes; both steps are linear per channel, so the fast paths resize the raw frame first (less to map) and
apply the map once, as one multiply-add ``offset + x * gain`` (:meth:`~espnet_ros.core.weights.Preprocessing.affine`).
The values differ from the upstream order by float32 rounding only (the tests pin at most 2e-6 on real frames
against :meth:`~espnet_ros.core.weights.Preprocessing.apply_numpy`, the upstream-order reference).

:func:`preprocess_into` is the CPU function (OpenCV's bilinear filter, the recipe's; a frame of exactly twice the
network size goes strip by strip, the same values); :func:`preprocess_tensors` is its counterpart for frames
already on a torch device (CUDA), equal to it bit for bit for frames of the network size and of twice it, and within
float rounding of it for other sizes (a different bilinear implementation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["frame_tensor", "preprocess_into", "preprocess_tensors"]

_STRIP_ROWS = 16
"""Output rows per strip when a frame is exactly twice the network input (32 float input rows: ~0.8 MB at 2048)."""


def frame_tensor(image: npt.NDArray[np.generic]) -> torch.Tensor:
    """A tensor sharing the memory of the frame ``image``, read-only arrays included.

    A frame may be a read-only view (a recorded message's pixels, read in place); nothing here writes to a frame, so
    torch's warning about non-writable arrays is not raised for it.
    """
    if image.flags.writeable:
        return torch.from_numpy(image)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(image)


def _affine_into(image: torch.Tensor, order: str, gain: torch.Tensor, offset: torch.Tensor,
                 out: torch.Tensor) -> None:
    """An ``(h, w, 3)`` image in ``order`` through the per-channel map into ``out`` (BGR channels), one rounding."""
    if order == "rgb":
        image = image.flip(-1)
    torch.addcmul(offset, image, gain, out=out)


def _resize_into(image: npt.NDArray[np.float32], order: str, gain: torch.Tensor, offset: torch.Tensor,
                 out: torch.Tensor) -> None:
    """A float image resized to ``out``'s ``(h, w)`` (OpenCV bilinear, the recipe's filter), then the map."""
    h, w = int(out.shape[0]), int(out.shape[1])
    resized = np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    _affine_into(torch.from_numpy(resized), order, gain, offset, out)


def preprocess_into(image: npt.NDArray[np.uint8], order: str, gain: torch.Tensor, offset: torch.Tensor,
                    out: torch.Tensor) -> None:
    """Write the network input of one frame into ``out``, on the CPU.

    Args:
        image: ``(H, W, 3) uint8`` frame, channels in ``order``.
        order: ``bgr`` or ``rgb``.
        gain, offset: ``(3,) float32`` tensors in BGR order (:meth:`~espnet_ros.core.weights.Preprocessing.affine`).
        out: ``(h, w, 3) float32`` destination (BGR channels), e.g. one frame's slot of a channels-last batch.

    A frame of the network size is mapped directly; one of exactly twice it goes strip by strip (for a factor of
    2 each output row of the bilinear resize depends on its own two input rows, so the values are the same bit
    for bit, and the float copy of a strip stays in the cache instead of a 24 MB float frame going out to memory
    and back); any other size is converted to float once and resized by OpenCV (in parallel).
    """
    h, w = int(out.shape[0]), int(out.shape[1])
    size = (int(image.shape[1]), int(image.shape[0]))
    if size == (w, h):
        _affine_into(frame_tensor(image), order, gain, offset, out)
    elif size == (2 * w, 2 * h):
        rows = _STRIP_ROWS
        buf = np.empty((2 * min(rows, h), image.shape[1], 3), np.float32)
        for top in range(0, h, rows):
            n = min(rows, h - top)
            f = buf[:2 * n]
            np.copyto(f, image[2 * top:2 * (top + n)], casting="unsafe")
            _resize_into(f, order, gain, offset, out[top:top + n])
    else:
        _resize_into(frame_tensor(image).float().numpy(), order, gain, offset, out)


def preprocess_tensors(frames: Sequence[torch.Tensor], orders: Sequence[str], network_size: tuple[int, int],
                       gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """:func:`preprocess_into` for ``(H, W, 3) uint8`` tensors on any device: the ``(N, 3, h, w) float32`` batch.

    ``gain`` and ``offset`` are ``(1, 3, 1, 1)`` float32 on the frames' device. A frame of twice the network size
    takes the mean of each 2x2 block (what the bilinear resize computes for a factor of 2, exactly); other sizes
    use torch's bilinear filter without antialiasing (OpenCV's, to float rounding).
    """
    w, h = network_size
    planes = []
    for t, order in zip(frames, orders, strict=True):
        x = t.permute(2, 0, 1).unsqueeze(0)
        if order == "rgb":
            x = x.flip(1)
        x = x.float()
        ih, iw = int(t.shape[0]), int(t.shape[1])
        if (iw, ih) == (2 * w, 2 * h):
            x = F.avg_pool2d(x, 2)
        elif (iw, ih) != (w, h):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
        planes.append(x)
    x = torch.cat(planes, 0) if len(planes) > 1 else planes[0]
    return torch.addcmul(offset, x, gain)
