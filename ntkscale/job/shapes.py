"""How a job's rows are read: the ``[model]`` input shape (``image_shape`` / ``sequence_shape``).

Every architecture but ``fc`` reads each flattened data row through a leading ``Unflatten``:
``image_shape = [H, W, C]`` makes it an NHWC image (2-d windows), ``sequence_shape = [T, C]`` a
sequence of ``T`` positions with ``C`` channels (1-d windows; the kernel state reads it as an
image of height 1, :mod:`ntkscale.kernels.windows`). Here: the schema of the two keys
(:func:`parse_shapes`), the window check of VALID convolutions (:func:`check_windows`), and the
row-width check against the data (:func:`check_row_width`), all raising
:class:`~ntkscale._config.ConfigError` that names the key and the fix before any work.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from .._config import ConfigError, get

__all__ = ["SHAPED", "parse_shapes", "check_windows", "input_shape", "check_row_width"]

SHAPED = ("cntk", "myrtle", "transformer")
"""Architectures that read rows as images or sequences (one of the two shape keys)."""

_IMAGE = "[height, width, channels]"
_SEQ = "[length, channels]"


def _positive_ints(v: list) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)


def parse_shapes(t: Mapping[str, Any], arch: str) -> tuple[list, list]:
    """``(image_shape, sequence_shape)`` of a ``[model]`` table: exactly one of them for the
    architectures in :data:`SHAPED` (the other ``[]``), neither for ``fc``.

    Raises
    ------
    ConfigError
        A shape key on ``fc``; none or both on a shaped architecture; a shape that is not
        ``[H, W, C]`` / ``[T, C]`` of positive integers.
    """
    image = get(t, "image_shape", list, [], path="model")
    seq = get(t, "sequence_shape", list, [], path="model")
    if arch not in SHAPED:
        for key, v, what in (("image_shape", image, "image architectures only"),
                             ("sequence_shape", seq, "sequence architectures only")):
            if v:
                raise ConfigError(f"'model.{key}' applies to {what} (architecture = 'cntk', 'myrtle' or "
                                  f"'transformer'); remove it for architecture = {arch!r}, or set "
                                  f"'model.architecture'")
        return [], []
    if bool(image) == bool(seq):
        keys = [f"'model.image_shape' = {_IMAGE}", f"'model.sequence_shape' = {_SEQ}"]
        keys = keys[::-1] if arch == "transformer" else keys  # its usual input first
        raise ConfigError(f"architecture = {arch!r} reads flattened rows as images or sequences: give "
                          f"{keys[0]} or {keys[1]} (one of them): "
                          f"{'both are set, remove one' if image else 'neither is set'}")
    if seq and (len(seq) != 2 or not _positive_ints(seq)):
        raise ConfigError(f"'model.sequence_shape' must be {_SEQ} (two positive integers: rows are "
                          f"flattened (T, C) sequences, position-major), got {seq!r}; for images give "
                          f"'model.image_shape' = {_IMAGE}")
    if image and (len(image) != 3 or not _positive_ints(image)):
        raise ConfigError(f"'model.image_shape' must be {_IMAGE} for architecture = {arch!r} (three "
                          f"positive integers: rows are flattened NHWC images), got {image!r}; "
                          f"for sequences give 'model.sequence_shape' = {_SEQ}")
    return list(image), list(seq)


def check_windows(model: Mapping[str, Any]) -> None:
    """A ``cntk`` with ``padding = "VALID"`` must keep at least one position on every axis:
    each of its ``depth`` convolutions removes ``filter - 1`` positions.

    Raises
    ------
    ConfigError
        Naming the axis, ``filter``, ``depth`` and the fix (SAME/CIRCULAR, a smaller filter
        or depth).
    """
    if model["architecture"] != "cntk" or model["padding"] != "VALID":
        return
    key, shape = _shape_key(model)
    axes = (("length", shape[0]),) if key == "sequence_shape" else (("height", shape[0]), ("width", shape[1]))
    filt, depth = int(model["filter"]), int(model["depth"])
    for name, size in axes:
        if size - depth * (filt - 1) < 1:
            raise ConfigError(
                f"'model.filter' = {filt} with padding = 'VALID' and depth = {depth} leaves no position of "
                f"the {name} {size} of 'model.{key}' (each layer removes filter - 1 = {filt - 1}): use "
                f"padding = 'SAME' or 'CIRCULAR', or a filter/depth with depth x (filter - 1) < {size}")


def _shape_key(model: Mapping[str, Any]) -> tuple[str, list]:
    if model.get("sequence_shape"):
        return "sequence_shape", list(model["sequence_shape"])
    return "image_shape", list(model.get("image_shape") or [])


def input_shape(model: Mapping[str, Any]) -> Optional[tuple[int, ...]]:
    """``(T, C)``, ``(H, W, C)`` or None (``fc``): the shape each row is read as."""
    _, shape = _shape_key(model)
    return tuple(int(v) for v in shape) if shape else None


def check_row_width(model: Mapping[str, Any], d: int, what: str = "the data") -> None:
    """Refuse rows of ``d`` features that the ``[model]`` shape cannot read (``T C`` or
    ``H W C`` values per row), before anything is built.

    Parameters
    ----------
    model : mapping
        A resolved ``[model]`` section.
    d : int
        Features per row of the data (training and test rows have the same width).
    what : str
        How the message names the data (``"the training data (digits)"``).

    Raises
    ------
    ConfigError
        Naming the shape key, its product and ``d``, and the fix.
    """
    shape = input_shape(model)
    if shape is None:
        return
    key, need, d = _shape_key(model)[0], math.prod(shape), int(d)
    if need == d:
        return
    if key == "sequence_shape":
        rule, t = "length x channels", shape[0]
        hint = [t, d // t] if d % t == 0 else [d, 1]
    else:
        rule, (h, w), side = "height x width x channels", shape[:2], math.isqrt(d)
        hint = [h, w, d // (h * w)] if d % (h * w) == 0 else [side, side, 1] if side * side == d else [d, 1, 1]
    raise ConfigError(f"'model.{key}' = {list(shape)} reads rows of {rule} = {need} values, but {what} has "
                      f"{d} features per row: set 'model.{key}' so that {rule} = {d} (e.g. {hint}), or use "
                      f"the data the shape was written for")
