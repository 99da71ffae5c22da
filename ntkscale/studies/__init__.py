"""Studies: one-command experiments that write figures and a written result.

* :mod:`.transformer` -- a small transformer encoder in plain JAX (``init``/``apply``);
* :mod:`.transformer_dd` -- its model-wise double descent next to the empirical-NTK and
  spectral-theory predictions (``python -m ntkscale.studies.transformer_dd --out DIR``);
* :mod:`.transformer_infinite` -- the infinite-width NTK/NNGP of that transformer (the closest
  closed-form architecture, from ``ntkscale.stax``).

Modules import JAX and matplotlib lazily, so importing this package costs nothing.
"""
