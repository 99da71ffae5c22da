"""The fully connected layer, ``Dense`` (neural-tangents' ``stax.Dense``).

References
----------
Novak et al. (2020), "Neural Tangents: Fast and Easy Infinite Neural Networks
in Python", ICLR (the ``stax`` API and the NTK/standard parameterizations).
Jacot, Gabriel & Hongler (2018), "Neural Tangent Kernel" (Dense NTK rule).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any, Optional

from .backend import Namespace
from .base import Layer, _check_weighted, check_nt_axes, layer_type
from .state import KernelState

__all__ = ["Dense"]


@layer_type()
@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer, ``Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0,
    channel_axis=-1, parameterization='ntk', s=(1, 1))`` (neural-tangents' signature; the
    axes are accepted at their defaults only and never enter the spec).

    NTK parameterization (default): ``z = W_std/sqrt(n_in) * x W + b_std * b`` with
    ``W, b ~ N(0, 1)``; kernel rule ``nngp <- W_std^2 nngp + b_std^2`` and
    ``ntk <- nngp_new + W_std^2 ntk``. ``out_dim`` does not enter the kernel.

    Standard parameterization: ``W ~ N(0, W_std^2 s0 / n_in)``, ``b ~ N(0, b_std^2)``,
    ``z = x W / sqrt(s0) + b``, output width ``out_dim * s1``; the NTK picks up the
    fan-in: ``ntk <- (n_in/s0) nngp + W_std^2 ntk + [b_std is not None]`` (NT's rule;
    it grows with the width of the previous layer).
    """

    out_dim: int
    W_std: float = 1.0
    b_std: Optional[float] = None
    batch_axis: InitVar[int] = 0
    channel_axis: InitVar[int] = -1
    parameterization: str = "ntk"
    s: tuple[int, int] = (1, 1)

    def __post_init__(self, batch_axis: int, channel_axis: int) -> None:
        name = _check_weighted(self, "out_dim")
        check_nt_axes(name, batch_axis=batch_axis, channel_axis=channel_axis)
        s = tuple(int(v) for v in self.s)
        if len(s) != 2 or min(s) < 1:
            raise ValueError(f"{name}: s must be two positive ints, got {self.s!r}")
        object.__setattr__(self, "s", s)

    def affine(self) -> tuple[float, float, float, float]:
        """Coefficients ``(W2, b2, A, B)`` of ``nngp' = W2 nngp + b2`` and
        ``ntk' = A nngp + W2 ntk + B`` (``A`` needs the fan-in in the standard case)."""
        w2 = self.W_std ** 2
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        return w2, b2, w2, b2

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        w2, b2, _, _ = self.affine()
        nngp = w2 * k.nngp + b2
        if k.ntk is None:
            ntk = None
        elif self.parameterization == "ntk":
            ntk = nngp + w2 * k.ntk
        else:
            ntk = (k.width / self.s[0]) * k.nngp + w2 * k.ntk + (0.0 if self.b_std is None else 1.0)
        cov1 = None if k.cov1 is None else w2 * k.cov1 + b2
        cov2 = None if k.cov2 is None else (cov1 if k.cov2 is k.cov1 else w2 * k.cov2 + b2)
        width = self.out_dim * (self.s[1] if self.parameterization == "standard" else 1)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=width)

    def spec(self) -> dict:
        return {"layer": "Dense", "out_dim": self.out_dim, "W_std": self.W_std, "b_std": self.b_std,
                "parameterization": self.parameterization, "s": list(self.s)}

    @classmethod
    def from_spec(cls, args: dict) -> "Dense":
        return cls(**{**args, "s": tuple(args.get("s", (1, 1)))})

    def gaussian(self, g: Any) -> bool:
        """A wide ``Dense`` layer's outputs are Gaussian, whatever its inputs."""
        return True
