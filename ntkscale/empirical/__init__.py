"""Empirical (finite-width) NTKs of JAX models: pure math beside ``kernels`` (layer 0).

* :func:`empirical_ntk` -- the kernel of any ``apply_fn(params, x)`` (plain JAX, Flax,
  Equinox-style), by Jacobian contraction or NTK-vector products, in row blocks sized by a
  memory budget (:mod:`.memory`); :func:`empirical_ntk_diag`, :func:`ntk_vector_product`.
* :class:`EmpiricalNTK` -- the same kernel as an architecture object: ``build_gram``,
  ``StoredGram``, the solvers, estimators and spectral tools take it.
* :func:`width_sweep` -- distance to the infinite-width NTK over widths (:func:`mlp`).
* :func:`ntk_evolution` -- the kernel along gradient descent (distance from init, alignment,
  top eigenvalues, losses).

JAX is imported when a function runs (``pip install 'ntkscale[jax]'``); no dask, no zarr.
"""

from .evolution import Evolution, kernel_alignment, kernel_distance, ntk_evolution
from .kernel import EmpiricalNTK
from .memory import DEFAULT_MEMORY, choose_batch, choose_method, jacobian_bytes_per_row
from .ntk import empirical_ntk, empirical_ntk_diag, ntk_vector_product
from .width import WidthSweep, mlp, relative_distance, width_sweep

__all__ = [
    "empirical_ntk", "empirical_ntk_diag", "ntk_vector_product", "EmpiricalNTK",
    "DEFAULT_MEMORY", "jacobian_bytes_per_row", "choose_method", "choose_batch",
    "width_sweep", "WidthSweep", "mlp", "relative_distance",
    "ntk_evolution", "Evolution", "kernel_distance", "kernel_alignment",
]
