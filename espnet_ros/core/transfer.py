"""Fine-tuning: a state dict for a new network from another's weights, class by class.

:func:`class_mapping` says which classes of the initial model (a preset or a model file) initialise each class of
a class file: the ones its ``init_from`` names, else the class of the same name, else none.
:func:`adapt_state` builds the new network's state from the initial one: every tensor that does not depend on the
classes and fits is copied (the encoder as is); the class-dependent ones take, along each class dimension, the mean
of their source classes' rows, and a class without sources keeps its fresh initialisation. A fine-tuned ESPNet keeps
its initial model's decoder width (:class:`~espnet_ros.core.model.ESPNet` ``decoder_width``), so its whole decoder
carries over and only the last layer is class-dependent; with the decoder as wide as the classes (upstream's layout,
or training from an ESPNet-C), the decoder's class-wide layers are mapped too and the channels inside its ESP module
keep what overlaps. No ROS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from espnet_ros.core.classes import ClassFile
from espnet_ros.core.errors import TrainError
from espnet_ros.core.labels import LabelSet
from espnet_ros.core.model import ESPNet

__all__ = ["adapt_state", "class_mapping"]


def class_mapping(classes: ClassFile, source: LabelSet) -> list[list[int]]:
    """For each class of ``classes``, the ids of ``source`` whose rows initialise it (empty: random).

    A class takes the source classes named by its ``init_from`` when ``source`` has them all, else the source class
    of its own name (case-insensitive), else nothing (random rows). ``init_from`` names of which neither exists in
    ``source`` raise :class:`TrainError` (a typo, or the class file was written for another initial model).
    """
    mapping: list[list[int]] = []
    for c in classes.classes:
        try:
            mapping.append([source.class_id(k) for k in c.init_from] if c.init_from else [source.class_id(c.name)])
            continue
        except ValueError as exc:
            problem = str(exc)
        try:
            mapping.append([source.class_id(c.name)])
        except ValueError:
            if c.init_from:
                raise TrainError(f"class file {classes.source}, class {c.id} ({c.name}): init_from: {problem}; fix "
                                 "the name, or drop init_from to start this class from random rows") from None
            mapping.append([])
    return mapping


def _esp_layout(channels: int) -> list[tuple[int, int]]:
    """(offset, size) of the five branches of an ESP module's output with ``channels`` channels."""
    n = channels // 5
    n1 = channels - 4 * n
    return [(0, n1)] + [(n1 + i * n, n) for i in range(4)]


def _dim_map(kind: str, new: int, old: int, mapping: list[list[int]], c_new: int, c_old: int) -> list[list[int]]:
    """Source indices for every index of one tensor dimension (empty: keep the fresh value)."""
    if kind == "class":
        return [list(m) for m in mapping]
    if kind == "2class":
        return [list(m) for m in mapping] + [[i + c_old for i in m] for m in mapping]
    if kind == "class+rest":
        rest = new - c_new
        return [list(m) for m in mapping] + [[c_old + j] if j < old - c_old else [] for j in range(rest)]
    if kind == "esp":
        out: list[list[int]] = []
        for (_, size_new), (off_old, size_old) in zip(_esp_layout(new), _esp_layout(old), strict=True):
            out += [[off_old + k] if k < size_old else [] for k in range(size_new)]
        return out
    return [[j] if j < old else [] for j in range(new)]  # 'slice': keep what overlaps


def _class_dims(key: str) -> tuple[str, ...] | None:
    """How each dimension of a class-dependent tensor is indexed (``None``: not class-dependent)."""
    k = key[len("encoder."):] if key.startswith("encoder.") else key
    if k == "classifier.conv.weight":  # ESPNet-C's classifier
        return ("class", "x", "x", "x")
    table: dict[str, tuple[str, ...]] = {
        "level3_C.conv.weight": ("class", "x", "x", "x"),
        "up_l3.0.weight": ("class", "class", "x", "x"),
        "combine_l2_l3.1.c1.conv.weight": ("slice", "2class", "x", "x"),
        "up_l2.0.weight": ("esp", "class", "x", "x"),
        "conv.conv.weight": ("class", "class+rest", "x", "x"),
        "classifier.weight": ("class", "class", "x", "x"),
    }
    if key in table:
        return table[key]
    for prefix, kind in (("br.", "class"), ("combine_l2_l3.0.", "2class"), ("combine_l2_l3.1.bn.", "esp"),
                         ("up_l2.1.", "class"), ("conv.bn.", "class"), ("conv.act.", "class")):
        if key.startswith(prefix) and not key.endswith("num_batches_tracked"):
            return (kind,)
    if key.startswith("combine_l2_l3.1.d"):
        return ("slice", "slice", "x", "x")
    return None


def _gather(old: Tensor, fresh: Tensor, maps: Sequence[list[list[int]] | None]) -> Tensor:
    """``fresh`` with every position whose source indices exist in all mapped dims taken from ``old`` (averaged)."""
    result = old.to(torch.float64)
    valid = torch.ones(fresh.shape, dtype=torch.bool)
    for d, m in enumerate(maps):
        if m is None:
            continue
        mat = torch.zeros(len(m), result.shape[d], dtype=torch.float64)
        ok = torch.zeros(len(m), dtype=torch.bool)
        for j, src in enumerate(m):
            src = [i for i in src if i < result.shape[d]]
            if src:
                mat[j, src] = 1.0 / len(src)
                ok[j] = True
        result = torch.movedim(torch.tensordot(mat, torch.movedim(result, d, 0), dims=1), 0, d)
        shape = [1] * fresh.dim()
        shape[d] = len(m)
        valid = valid & ok.view(shape)
    return torch.where(valid, result.to(fresh.dtype), fresh)


def adapt_state(
    init_state: dict[str, Tensor], model: nn.Module, mapping: list[list[int]], init_classes: int
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """A state dict for ``model`` that keeps what fits of ``init_state`` (ESPNet or ESPNet-C keys, either way).

    Tensors of the same shape that do not depend on the classes are copied. The class-dependent ones are built
    class by class from ``mapping`` (:func:`class_mapping`): with the same classes in the same order that is a
    copy; otherwise each new class takes (the mean of) its source rows and a class without sources keeps its fresh
    initialisation; the channels inside the decoder's ESP module keep what overlaps. When ``model``'s decoder is
    wider than its classes (:attr:`~espnet_ros.core.model.ESPNet.decoder_width`, the initial model's width), every
    tensor but the last layer's is copied and only the last layer's class rows are mapped. Returns the state and
    counts of ``copied``, ``mapped`` and ``fresh`` tensors.
    """
    target = model.state_dict()
    c_new = len(mapping)
    # a decoder wider than its classes (it kept the initial model's width): only the last layer depends on them
    wide = isinstance(model, ESPNet) and model.decoder_width != c_new
    identity = c_new == init_classes and all(m == [i] for i, m in enumerate(mapping))
    out: dict[str, Tensor] = {}
    counts = {"copied": 0, "mapped": 0, "fresh": 0}
    for key, fresh in target.items():
        src_key = key
        if src_key not in init_state and key.startswith("encoder.") and key[8:] in init_state:
            src_key = key[8:]
        elif src_key not in init_state and f"encoder.{key}" in init_state:
            src_key = f"encoder.{key}"
        old = init_state.get(src_key)
        dims = (("x", "class", "x", "x") if key == "classifier.weight" else None) if wide else _class_dims(key)
        if old is None or (dims is not None and old.dim() != len(dims)) or (dims is None and old.shape != fresh.shape):
            out[key] = fresh
            counts["fresh"] += 1
            continue
        if dims is None or (identity and old.shape == fresh.shape):
            out[key] = old.to(fresh.dtype).clone()
            counts["copied"] += 1
            continue
        maps: list[list[list[int]] | None] = []
        for d, kind in enumerate(dims):
            maps.append(None if kind == "x" else
                        _dim_map(kind, int(fresh.shape[d]), int(old.shape[d]), mapping, c_new, init_classes))
        if any(m is None and old.shape[d] != fresh.shape[d] for d, m in enumerate(maps)):
            out[key] = fresh
            counts["fresh"] += 1
            continue
        out[key] = _gather(old, fresh, maps)
        counts["mapped"] += 1
    return out, counts
