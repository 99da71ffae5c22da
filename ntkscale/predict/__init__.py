"""neural-tangents' ``nt.predict`` with its names, signatures and return conventions.

Porting a script is an import change::

    from ntkscale import stax, predict          # was: from neural_tangents import stax, predict
    _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(1))
    predict_fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=1e-4)
    mean, cov = predict_fn(t=None, x_test=x_test, get='ntk', compute_cov=True)

=====================================  =============================================================
NT ``predict.``                        here
=====================================  =============================================================
``gradient_descent_mse_ensemble``      same; ``k_train_train=`` a stored Gram for large n
``gp_inference``                       same; the train kernel may be a stored Gram / URL
``gradient_descent_mse``               same; ditto
``gradient_descent``                   MSE losses only (closed form); others: NotImplementedError
``max_learning_rate``                  same (Lanczos for a stored Gram)
``Gaussian``, ``ODEState``             same
=====================================  =============================================================

Arrays (up to :func:`ntkscale.solvers.dense_limit`) are decomposed in memory as NT does
(``eigh`` for finite times, Cholesky for ``t=None``); a :class:`ntkscale.operator.StoredGram`
is never formed: :func:`ntkscale.solvers.solve` (tiled Cholesky, Nyström-PCG) for ``t=None``,
Lanczos (:func:`ntkscale.solvers.lanczos_matfuncs`) for finite ``t``. Results are NumPy float64.
Each ``predict_fn`` has an ``info`` list saying what ran.

Layer: a user-facing facade above pipeline, solvers and operator (beside the estimators).
"""

from ._args import Gaussian
from .ensemble import gradient_descent_mse_ensemble
from .functions import ODEState, gp_inference, gradient_descent, gradient_descent_mse, max_learning_rate

__all__ = ["Gaussian", "ODEState", "gradient_descent_mse_ensemble", "gp_inference", "gradient_descent_mse",
           "gradient_descent", "max_learning_rate"]
