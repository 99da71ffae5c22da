"""Shipped oracles for testing kernel code (independent of ``ntkscale.kernels``).

* :func:`reference_kernels` — dense plain-NumPy NNGP/NTK of fully connected chains.
* :func:`gaussian_expectation` — Gauss–Hermite ``E[f(u) g(v)]`` for a bivariate Gaussian.
* :func:`arccos_kernel`, :func:`relu_ntk_sphere` — closed forms on the unit sphere.
* :class:`OperatorContract` — the operator contract's tests, to subclass per operator class
  (imported from :mod:`ntkscale.testing.operator_contract`; needs pytest).
"""

from .quadrature import gaussian_expectation, hermite_rule
from .reference import arccos_kernel, reference_diag, reference_kernels, relu_ntk_sphere

__all__ = ["reference_kernels", "reference_diag", "arccos_kernel", "relu_ntk_sphere",
           "gaussian_expectation", "hermite_rule"]
