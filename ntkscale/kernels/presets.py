"""Named architectures: the CNTK (conv stack, Flatten readout), Myrtle kernels and an
infinite-width transformer (attention + LayerNorm + MLP residual blocks, pooled readout).

All return ordinary ``serial(...)`` architectures of this package's layers, starting
with ``Unflatten(H, W, C)`` so they read flattened rows (Gram stores, job files). Given a
sequence shape ``(T, C)`` instead, the rows are read as sequences (``Unflatten(1, T, C)``)
and the CNTK and Myrtle windows are 1-d (neural-tangents' ``filter_shape=(f,)``).

References
----------
Arora et al. (2019), "On Exact Computation with an Infinitely Wide Neural Net" (CNTK).
Hron et al. (2020), "Infinite attention: NNGP and NTK for deep attention networks", ICML.
Shankar et al. (2020), "Neural Kernels Without Tangents", ICML (Myrtle-5/7/10: conv
stages at full, 1/2 and 1/4 resolution separated by 2x2 average pooling, then pooling
down to 1x1 and a linear readout).
"""

from __future__ import annotations

from typing import Sequence

from .combinators import serial
from .attention import GlobalSelfAttention
from .combinators import FanInSum, FanOut, parallel
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, Unflatten
from .layers import Dense, Identity, Layer
from .norm import LayerNorm
from .registry import make_activation

__all__ = ["cntk", "myrtle", "transformer", "MYRTLE_STAGES"]

MYRTLE_STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}
"""Myrtle depth -> conv layers at full, 1/2 and 1/4 resolution."""


def _shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (height, width, channels), got {image_shape!r}")
    return shape


def _input(input_shape: Sequence[int], what: str) -> tuple[Unflatten, int]:
    """``Unflatten`` of images ``(H, W, C)`` or sequences ``(T, C)``, and the window rank (2 or 1)."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2 and min(shape) >= 1:
        return Unflatten(1, *shape), 1
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{what}: input shape must be images (height, width, channels) or sequences "
                         f"(length, channels), got {input_shape!r}")
    return Unflatten(*shape), 2


def cntk(image_shape: Sequence[int], depth: int = 2, *, filter_size: int = 3,
         padding: str = "SAME", activation: str = "relu", W_std: float = 2 ** 0.5,
         b_std: float = 0.0, channels: int = 1) -> Layer:
    """``depth`` x (Conv(filter_size) + activation), Flatten, Dense(1): the CNTK without
    pooling (Arora et al. 2019's "vanilla" CNTK). Its kernel tracks same-position
    covariances only: ~``H W depth`` work per Gram entry.

    ``image_shape`` ``(H, W, C)``: rows are NHWC images, windows ``(f, f)``; ``(T, C)``: rows
    are sequences, windows ``(f,)`` (a 1-d CNTK, ~``T depth`` work per entry).
    """
    if int(depth) < 1:
        raise ValueError(f"cntk: depth must be >= 1, got {depth!r}")
    unflatten, rank = _input(image_shape, "cntk")
    layers: list[Layer] = [unflatten]
    for _ in range(int(depth)):
        layers += [Conv(channels, (filter_size,) * rank, padding=padding, W_std=W_std,
                        b_std=b_std), make_activation(activation)]
    return serial(*layers, Flatten(), Dense(1, W_std=W_std, b_std=b_std))


def myrtle(image_shape: Sequence[int], depth: int = 5, *, activation: str = "relu",
           W_std: float = 2 ** 0.5, b_std: float = 0.0, channels: int = 1) -> Layer:
    """Myrtle-``depth`` (5, 7 or 10): conv stages (3x3, SAME) at full, 1/2 and 1/4
    resolution separated by 2x2 average pooling, global average pooling, Dense(1).

    Shankar et al. pool a 32x32 image down to 1x1 with three more 2x2 pools; for other
    sizes this is global average pooling, which is the same at 32x32. Pooling needs all
    pixel-pair covariances: ~``(H W)^2`` work per Gram entry at full resolution.

    Sequences ``(T, C)``: the same stages in 1-d (3-tap convolutions at length ``T``, ``T/2``
    and ``T/4``, 2-tap average pooling with stride 2, SAME), ~``T^2`` work per entry.
    """
    stages = MYRTLE_STAGES.get(int(depth))
    if stages is None:
        raise ValueError(f"myrtle: depth must be one of {sorted(MYRTLE_STAGES)}, got {depth!r}")
    unflatten, rank = _input(image_shape, "myrtle")
    layers: list[Layer] = [unflatten]
    for s, count in enumerate(stages):
        if s:
            layers.append(AvgPool((2,) * rank, (2,) * rank, padding="SAME"))
        for _ in range(count):
            layers += [Conv(channels, (3,) * rank, padding="SAME", W_std=W_std, b_std=b_std),
                       make_activation(activation)]
    return serial(*layers, GlobalAvgPool(), Dense(1, W_std=W_std, b_std=b_std))


def transformer(input_shape: Sequence[int], depth: int = 2, *, n_heads: int = 1,
                attention_mechanism: str = "SOFTMAX", activation: str = "relu",
                W_std: float = 2 ** 0.5, b_std: float = 0.0, QK_std: float = 1.0,
                readout: str = "pool", channels: int = 1) -> Layer:
    """An infinite-width transformer on sequences ``(T, C)`` (or images ``(H, W, C)``) read
    from flattened rows: ``Unflatten``, a ``Dense`` embedding, ``depth`` x [attention residual
    block, LayerNorm, MLP residual block (``Dense``, activation, ``Dense``), LayerNorm], then
    ``GlobalAvgPool`` (``readout="pool"``) or ``Flatten`` and ``Dense(1)``.

    Attention is :class:`~ntkscale.kernels.attention.GlobalSelfAttention` with
    ``linear_scaling=True`` (the variant with a closed-form kernel), ``W_key_std =
    W_query_std = sqrt(QK_std)``, ``W_value_std = W_std``. Every attention layer needs all
    position pairs: ~``T^2`` floats and ``T^3`` work per Gram entry and layer. ``channels``
    sets the finite network's widths only (the kernel is their infinite limit).
    """
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    shape = _shape(shape)
    if int(depth) < 1:
        raise ValueError(f"transformer: depth must be >= 1, got {depth!r}")
    if readout not in ("pool", "flatten"):
        raise ValueError(f"transformer: readout must be 'pool' or 'flatten', got {readout!r}")
    qk = float(QK_std) ** 0.5
    layers: list[Layer] = [Unflatten(*shape), Dense(channels, W_std=W_std, b_std=b_std)]
    for _ in range(int(depth)):
        att = GlobalSelfAttention(channels, channels, channels, n_heads, W_key_std=qk, W_query_std=qk,
                                  W_value_std=W_std, W_out_std=1.0, b_std=b_std,
                                  attention_mechanism=attention_mechanism)
        mlp = serial(Dense(channels, W_std=W_std, b_std=b_std), make_activation(activation),
                     Dense(channels, W_std=W_std, b_std=b_std))
        for branch in (att, mlp):
            layers += [FanOut(2), parallel(branch, Identity()), FanInSum(), LayerNorm()]
    end = GlobalAvgPool() if readout == "pool" else Flatten()
    return serial(*layers, end, Dense(1, W_std=W_std, b_std=b_std))
