"""The ``[model]`` section as an architecture (neural-tangents ``stax`` conventions)."""

from __future__ import annotations

from typing import Any, Mapping

from .. import stax
from ..kernels import Layer, cntk, myrtle, transformer
from ..kernels.registry import make_activation
from .._config import ConfigError
from .shapes import SHAPED, input_shape

__all__ = ["build_arch"]


def build_arch(model: Mapping[str, Any]) -> Layer:
    """The ``[model]`` architecture: ``architecture = "fc"`` (default) is
    ``serial((Dense(width, W_std, b_std), act) x depth, Dense(1, W_std, b_std))``;
    ``"cntk"`` and ``"myrtle"`` are :func:`ntkscale.kernels.cntk` / :func:`~ntkscale.kernels.myrtle`
    on rows that are flattened ``image_shape`` images (2-d windows) or ``sequence_shape``
    sequences (``Unflatten(1, T, C)``, 1-d windows of ``filter`` taps; Myrtle's 3 taps and
    2-tap pooling); ``"transformer"`` is :func:`ntkscale.kernels.transformer` on flattened
    ``sequence_shape`` sequences (or images). The shape is :func:`ntkscale.job.shapes.input_shape`.

    Parameters
    ----------
    model : mapping
        A resolved ``[model]`` section (``depth``, ``width``, ``activation``, ``W_std``,
        ``b_std``, ``parameterization``; ``image_shape`` / ``sequence_shape``, ``filter``,
        ``padding``, ``heads``, ``attention``, ``readout`` for the shaped architectures).

    Returns
    -------
    Layer
        ``init_fn, apply_fn, kernel_fn`` of the network.
    """
    kind = model.get("architecture", "fc")
    shape = input_shape(model)
    if kind in SHAPED and shape is None:
        raise ConfigError(f"architecture = {kind!r} needs 'model.image_shape' = [height, width, channels] "
                          "or 'model.sequence_shape' = [length, channels]")
    if kind == "cntk":
        return cntk(shape, int(model["depth"]), filter_size=int(model["filter"]),
                    padding=model["padding"], activation=model["activation"],
                    W_std=float(model["W_std"]), b_std=float(model["b_std"]))
    if kind == "transformer":
        return transformer(shape, int(model["depth"]),
                           n_heads=int(model["heads"]), attention_mechanism=model["attention"].upper(),
                           activation=model["activation"], W_std=float(model["W_std"]),
                           b_std=float(model["b_std"]), readout=model["readout"])
    if kind == "myrtle":
        return myrtle(shape, int(model["depth"]), activation=model["activation"],
                      W_std=float(model["W_std"]), b_std=float(model["b_std"]))
    kw = dict(W_std=float(model["W_std"]), b_std=float(model["b_std"]),
              parameterization=model["parameterization"])
    layers: list = []
    for _ in range(int(model["depth"])):
        layers += [stax.Dense(int(model["width"]), **kw), make_activation(model["activation"])]
    return stax.serial(*layers, stax.Dense(1, **kw))
