"""neural-tangents 0.6.5 ``stax`` exports that ntkscale does not implement: each exists with
NT's signature and refuses at construction (or call) with an
:class:`~ntkscale.kernels.base.UnsupportedArchitectureError` that says so and what to use
instead, so a ported script stops at the line that needs a change, not later. NT's enums
(``Padding``, ``AggregateImplementation``, ``Bool``) are real enums with NT's members.

README "neural-tangents stax exports" is the table of every export (implemented / refused).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, NoReturn, Optional

from .base import UnsupportedArchitectureError

__all__ = ["Padding", "AggregateImplementation", "Bool", "Aggregate", "DotGeneral", "Dropout",
           "ElementwiseNumerical", "ImageResize", "Index", "Slice",
           "Diagonal", "MaskedArray", "layer", "requires", "supports_masking", "unmask_fn", "REFUSED"]


class Padding(enum.Enum):
    """Padding names (neural-tangents' enum); layers accept a member or its string."""

    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


class AggregateImplementation(enum.Enum):
    """neural-tangents' ``Aggregate`` implementations (``Aggregate`` is refused)."""

    DENSE = "DENSE"
    SPARSE = "SPARSE"


class Bool(enum.Enum):
    """neural-tangents' three-valued ``Bool`` of kernel requirements (``Diagonal``, refused)."""

    NO = 0
    MAYBE = 1
    YES = 2


#: export -> what to use instead (the refusal's second half; README table's note)
REFUSED = {
    "Aggregate": "graph aggregation has no ntkscale kernel; build the graph kernel outside ntkscale",
    "DotGeneral": "multiply inputs by a fixed matrix before calling kernel_fn",
    "Dropout": "kernels are those of the network at test time (mode='test'): remove the layer",
    "ElementwiseNumerical": "use Elementwise(fn, nngp_fn) with a closed-form nngp_fn, or a built-in "
                            "activation",
    "ImageResize": "resize the images before calling kernel_fn",
    "Index": "index the inputs before calling kernel_fn",
    "Slice": "slice the inputs before calling kernel_fn",
    "Diagonal": "ntkscale chooses kernel layouts itself; drop the requirement",
    "MaskedArray": "drop or impute masked entries first; masking is not supported",
    "layer": "custom layers: compose ntkscale.stax layers, or Elementwise(fn, nngp_fn)",
    "requires": "custom layers: compose ntkscale.stax layers, or Elementwise(fn, nngp_fn)",
    "supports_masking": "masking is not supported; drop or impute masked entries first",
    "unmask_fn": "masking is not supported; drop or impute masked entries first",
}


def _refuse(name: str) -> NoReturn:
    raise UnsupportedArchitectureError(
        f"stax.{name} (neural-tangents) is not supported by ntkscale yet; {REFUSED[name]} "
        "(see README, 'neural-tangents stax exports')")


def Aggregate(aggregate_axis: Any = None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Optional[Callable[..., Any]] = None,
              implementation: str = "DENSE") -> NoReturn:
    """Refused (graph aggregation): raises :class:`UnsupportedArchitectureError`."""
    _refuse("Aggregate")


def DotGeneral(*, lhs: Any = None, rhs: Any = None,
               dimension_numbers: Any = (((), ()), ((), ())), precision: Any = None,
               batch_axis: int = 0, channel_axis: int = -1) -> NoReturn:
    """Refused (a fixed linear map): raises :class:`UnsupportedArchitectureError`."""
    _refuse("DotGeneral")


def Dropout(rate: float, mode: str = "train") -> NoReturn:
    """Refused: raises :class:`UnsupportedArchitectureError`."""
    _refuse("Dropout")


def ElementwiseNumerical(fn: Callable[[Any], Any], deg: int,
                         df: Optional[Callable[[Any], Any]] = None) -> NoReturn:
    """Refused (Gauss-Hermite quadrature): raises :class:`UnsupportedArchitectureError`."""
    _refuse("ElementwiseNumerical")


def ImageResize(shape: Any, method: Any, antialias: bool = True, precision: Any = "HIGHEST",
                batch_axis: int = 0, channel_axis: int = -1) -> NoReturn:
    """Refused: raises :class:`UnsupportedArchitectureError` (``precision``'s default is
    NT's ``Precision.HIGHEST`` by name: ntkscale does not import JAX here)."""
    _refuse("ImageResize")


def Index(idx: Any, batch_axis: int = 0, channel_axis: int = -1) -> NoReturn:
    """Refused: raises :class:`UnsupportedArchitectureError`."""
    _refuse("Index")


class _Slice:
    """``stax.Slice[...]`` (NT: ``Index`` by slicing syntax): refuses when indexed."""

    def __getitem__(self, idx: Any) -> NoReturn:
        _refuse("Slice")

    def __repr__(self) -> str:
        return "ntkscale.stax.Slice (refused)"


Slice = _Slice()


class Diagonal:
    """Refused (a kernel-layout requirement of NT's custom layers)."""

    def __init__(self, input: Bool = Bool.YES, output: Bool = Bool.NO) -> None:  # noqa: A002
        _refuse("Diagonal")


class MaskedArray:
    """Refused (masked inputs)."""

    def __init__(self, masked_value: Any, mask: Any) -> None:
        _refuse("MaskedArray")


def layer(layer_fn: Callable[..., Any]) -> NoReturn:
    """Refused (NT's decorator for custom layers)."""
    _refuse("layer")


def requires(**static_reqs: Any) -> NoReturn:
    """Refused (NT's decorator for custom kernel functions)."""
    _refuse("requires")


def supports_masking(remask_kernel: bool) -> NoReturn:
    """Refused (NT's masking decorator)."""
    _refuse("supports_masking")


def unmask_fn(fn: Callable[..., Any]) -> NoReturn:
    """Refused (NT's masking helper)."""
    _refuse("unmask_fn")
