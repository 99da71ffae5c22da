"""Combinators: serial, parallel, repeat, FanOut, FanInSum, FanInProd, FanInConcat
(neural-tangents' stax names).

They see their layers only through the :class:`~ntkscale.kernels.base.Layer` contract
(kernel rule, spec, ``gaussian``), so this module imports the base and no layer family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .backend import Namespace
from .base import Layer, States, UnsupportedArchitectureError, from_spec, layer_type

# ----------------------------------------------------------------------------
# Combinators
# ----------------------------------------------------------------------------
@layer_type("serial")
@dataclass(frozen=True)
class Serial(Layer):
    """Layers applied one after another (``serial``)."""

    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def kernel(self, ns: Namespace, k: States) -> States:
        for layer in self.layers:
            k = layer.kernel(ns, k)
        return k

    def check_kernel(self) -> None:
        for layer in self.layers:
            layer.check_kernel()
        _check_branches(self.layers)

    def flat(self) -> list[Layer]:
        return [leaf for layer in self.layers for leaf in layer.flat()]

    def sublayers(self) -> tuple[Layer, ...]:
        return self.layers

    def gaussian(self, g: Any) -> Any:
        for sub in self.layers:
            g = sub.gaussian(g)
        return g

    def spec(self) -> dict:
        return {"layer": "serial", "layers": [layer.spec() for layer in self.layers]}

    @classmethod
    def from_spec(cls, args: dict) -> "Layer":
        return cls(tuple(from_spec(s) for s in args["layers"]))


@layer_type("parallel")
@dataclass(frozen=True)
class Parallel(Layer):
    """Apply the i-th layer to the i-th branch (``parallel``; use after ``FanOut``)."""

    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def kernel(self, ns: Namespace, k: States) -> States:
        if not isinstance(k, list) or len(k) != len(self.layers):
            raise UnsupportedArchitectureError(
                f"parallel of {len(self.layers)} layers needs {len(self.layers)} branches; "
                "put FanOut(n) before it")
        return [layer.kernel(ns, ki) for layer, ki in zip(self.layers, k)]

    def check_kernel(self) -> None:
        for layer in self.layers:
            layer.check_kernel()
            _check_branches(layer.layers if isinstance(layer, Serial) else [layer])

    def sublayers(self) -> tuple[Layer, ...]:
        return self.layers

    def gaussian(self, g: Any) -> Any:
        return [sub.gaussian(gi) for sub, gi in zip(self.layers, g)]

    def spec(self) -> dict:
        return {"layer": "parallel", "layers": [layer.spec() for layer in self.layers]}

    @classmethod
    def from_spec(cls, args: dict) -> "Layer":
        return cls(tuple(from_spec(s) for s in args["layers"]))


@layer_type()
@dataclass(frozen=True)
class FanOut(Layer):
    """Copy the input into ``num`` branches."""

    num: int

    def __post_init__(self) -> None:
        if not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"FanOut: num must be a positive int, got {self.num!r}")

    def kernel(self, ns: Namespace, k: States) -> States:
        return [k] * self.num

    def gaussian(self, g: Any) -> Any:
        return [g] * self.num

    def spec(self) -> dict:
        return {"layer": "FanOut", "num": self.num}


@layer_type()
@dataclass(frozen=True)
class FanInSum(Layer):
    """Sum the branches (independent branches: kernels add)."""

    def kernel(self, ns: Namespace, k: States) -> States:
        if not isinstance(k, list):
            raise UnsupportedArchitectureError("FanInSum needs branches; put FanOut(n) before it")
        out = k[0]
        for other in k[1:]:
            ntk = None if out.ntk is None else out.ntk + other.ntk
            cov1 = None if out.cov1 is None else out.cov1 + other.cov1
            cov2 = None if out.cov2 is None else (cov1 if out.cov2 is out.cov1 else out.cov2 + other.cov2)
            out = out.replace(nngp=out.nngp + other.nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                              width=max(out.width, other.width))
        return out

    def gaussian(self, g: Any) -> bool:
        return all(g)

    def spec(self) -> dict:
        return {"layer": "FanInSum"}


@layer_type()
@dataclass(frozen=True)
class FanInProd(Layer):
    """Elementwise product of the branches (neural-tangents' ``FanInProd``).

    Independent centred branches: ``nngp = prod_i nngp_i`` (and the variances alike), and by
    the product rule ``ntk = sum_i ntk_i prod_{j != i} nngp_j``. The product of two or more
    branches is not Gaussian (a nonlinearity may not follow it, as in NT).
    """

    def kernel(self, ns: Namespace, k: States) -> States:
        if not isinstance(k, list):
            raise UnsupportedArchitectureError("FanInProd needs branches; put FanOut(n) before it")
        out = k[0]
        for other in k[1:]:
            ntk = None if out.ntk is None else out.ntk * other.nngp + out.nngp * other.ntk
            cov1 = None if out.cov1 is None else out.cov1 * other.cov1
            cov2 = None if out.cov2 is None else (cov1 if out.cov2 is out.cov1 else out.cov2 * other.cov2)
            out = out.replace(nngp=out.nngp * other.nngp, ntk=ntk, cov1=cov1, cov2=cov2)
        return out

    def gaussian(self, g: Any) -> bool:
        return len(g) == 1 and bool(g[0])

    def out_shape(self, shape: tuple) -> tuple:
        return tuple(shape[0])

    def finite(self, jax: Any, jnp: Any) -> Any:
        def prod(xs: Any) -> Any:
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        return prod

    def spec(self) -> dict:
        return {"layer": "FanInProd"}


@layer_type()
@dataclass(frozen=True)
class FanInConcat(Layer):
    """Concatenate the branches along the channel axis (neural-tangents' ``FanInConcat``).

    The kernel of concatenated channels is the channel-weighted mean of the branches'
    kernels, ``sum_i C_i K_i / sum_i C_i`` (``C_i`` the branch's channel count; the plain
    mean when all are equal), and the width is ``sum_i C_i``. As in NT the output counts as
    non-Gaussian. Only ``axis=-1`` (channels) is supported: NT's concatenation along a
    spatial or the batch axis changes the kernel's layout.
    """

    axis: int = -1

    def __post_init__(self) -> None:
        if self.axis != -1 or isinstance(self.axis, bool):
            raise UnsupportedArchitectureError(
                f"FanInConcat(axis={self.axis!r}) is not supported by ntkscale: only axis=-1 "
                "(concatenating channels) is; concatenate along channels, or use FanInSum")

    def kernel(self, ns: Namespace, k: States) -> States:
        if not isinstance(k, list):
            raise UnsupportedArchitectureError("FanInConcat needs branches; put FanOut(n) before it")
        total = float(sum(ki.width for ki in k))
        weights = [ki.width / total for ki in k]

        def mix(name: str) -> Any:
            if getattr(k[0], name) is None:
                return None
            out = weights[0] * getattr(k[0], name)
            for w, ki in zip(weights[1:], k[1:]):
                out = out + w * getattr(ki, name)
            return out

        cov1 = mix("cov1")
        cov2 = cov1 if k[0].cov2 is k[0].cov1 else mix("cov2")
        return k[0].replace(nngp=mix("nngp"), ntk=mix("ntk"), cov1=cov1, cov2=cov2,
                            width=int(total))

    def gaussian(self, g: Any) -> bool:
        return False

    def out_shape(self, shape: tuple) -> tuple:
        return (*shape[0][:-1], sum(s[-1] for s in shape))

    def finite(self, jax: Any, jnp: Any) -> Any:
        return lambda xs: jnp.concatenate(list(xs), axis=-1)

    def spec(self) -> dict:
        return {"layer": "FanInConcat", "axis": self.axis}


FAN_IN = (FanInSum, FanInProd, FanInConcat)


def _check_branches(layers: Sequence[Layer]) -> None:
    """Branch counts must balance: FanOut(n) ... parallel(n) ... FanInSum."""
    branches = 1
    for layer in layers:
        if isinstance(layer, FanOut):
            if branches != 1:
                raise UnsupportedArchitectureError("nested FanOut without FanInSum is not supported")
            branches = layer.num
        elif isinstance(layer, Parallel):
            if len(layer.layers) != branches:
                raise UnsupportedArchitectureError(
                    f"parallel of {len(layer.layers)} layers applied to {branches} branch(es)")
        elif isinstance(layer, FAN_IN):
            if branches == 1:
                raise UnsupportedArchitectureError(
                    f"{type(layer).__name__} without a preceding FanOut")
            branches = 1
        elif branches != 1:
            raise UnsupportedArchitectureError(
                f"{type(layer).__name__} applied to {branches} branches; wrap it in parallel(...)")
    if branches != 1:
        raise UnsupportedArchitectureError("the architecture ends with unmerged branches; add FanInSum()")


def check_gaussian(layer: Layer) -> None:
    """Every nonlinearity must see Gaussian pre-activations (neural-tangents' rule).

    The closed forms compute ``E[phi(u) phi(v)]`` for jointly Gaussian ``(u, v)``. A wide
    network's pre-activations are Gaussian after a ``Dense``/``Conv`` layer (and sums of
    such), but not its raw inputs, an activation's outputs, or a sum with a branch that
    carries them (a residual ``Identity`` around a block that starts after an activation).
    There the formula is not the wide network's kernel (Monte Carlo disagrees by 70 %), so
    it is refused. Linear layers (pooling, ``Flatten``, ``Identity``, sums) keep whatever
    they get; the architecture may end non-Gaussian. Each layer states its own rule
    (:meth:`~ntkscale.kernels.base.Layer.gaussian`); the combinators route it through
    the branches.

    Raises
    ------
    UnsupportedArchitectureError
        Names the activation and the fix (a ``Dense`` or ``Conv`` before it).
    """
    layer.gaussian(False)


def serial(*layers: Layer) -> Serial:
    """Compose layers in sequence (neural-tangents' ``stax.serial``).

    Each argument is a layer, or the ``(init_fn, apply_fn, kernel_fn)`` triple unpacked
    from one (NT style); the result unpacks into a triple, ``len()`` 3, ``[2]`` the kernel.
    """
    return Serial(_check_layers(layers, "serial"))


def parallel(*layers: Layer) -> Parallel:
    """Apply layers to branches in parallel (neural-tangents' ``stax.parallel``)."""
    return Parallel(_check_layers(layers, "parallel"))


def repeat(layer: Layer, n: int) -> Serial:
    """``layer`` composed ``n`` times (neural-tangents' ``stax.repeat``): the same as
    ``serial(*[layer] * n)`` (NT compiles the loop; here the kernels are the same)."""
    (layer,) = _check_layers((layer,), "repeat")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"repeat: n must be a positive int, got {n!r}")
    return Serial((layer,) * n)


def _check_layers(layers: Sequence[Any], where: str) -> tuple[Layer, ...]:
    if not layers:
        raise ValueError(f"{where}() needs at least one layer")
    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, (tuple, list)) and len(layer) == 3:
            # an (init_fn, apply_fn, kernel_fn) triple unpacked from an ntkscale layer
            layer = getattr(layer[2], "layer", layer)
        if not isinstance(layer, Layer):
            raise TypeError(f"{where}(): argument {i} is {type(layer).__name__}, not an ntkscale layer "
                            "(use ntkscale.stax.Dense, Relu, ...; a neural-tangents layer triple "
                            "cannot be mixed in: build it with ntkscale.stax)")
        out.append(layer)
    return tuple(out)
