"""Spectral analysis of kernel regression: pure functions of eigenpairs and targets.

No dask, no zarr, no I/O: numpy/scipy only (:mod:`.curves` reads Gram blocks through an
operator's ``op[r0:r1, c0:c1]`` and ``diag()``). Modules:

* :mod:`.theory` -- Bordelon/Canatar learning curves (kappa, gamma, E_g, training error);
* :mod:`.eigenlearning` -- Simon et al. learnabilities and conservation law;
* :mod:`.spectrum` -- empirical spectra and target weights from a Gram ``eigh``, power-law fits;
* :mod:`.tail` -- the spectrum past the k computed eigenpairs (power laws carrying the known
  tail mass and target power) for theory at large p;
* :mod:`.quadrature` -- the same tail measured instead: Lanczos quadrature of the deflated Gram;
* :mod:`.curves` -- measured learning curves (subsampled kernel regression) vs the theory;
* :mod:`.subsets` -- the random training/test subsets (trials) those experiments share;
* :mod:`.selection` -- GCV, KARE, closed-form LOO and ridge selection;
* :mod:`.dynamics` -- gradient-flow / GD predictions and the NTK-GP ensemble;
* :mod:`.double_descent` -- sample-, ridge- and model-wise double descent (optional module).
"""

from __future__ import annotations


from .curves import (EmpiricalCurve, LearningCurves, empirical_learning_curve, gather,
                     heldout_error, learning_curves, theory_learning_curve)
from .tail import TailModel, complete_spectrum, fit_tail
from .quadrature import TailQuadrature, quadrature_spectrum, tail_quadrature, theory_converged
from .dynamics import Predictions, gradient_descent, gradient_flow, mse_loss, ntk_gp
from .eigenlearning import (EigenlearningPrediction, conservation_residual,
                            effective_regularization, eigenlearning_predict, learnabilities,
                            overfitting_coefficient)
from .selection import RidgeSelection, gcv, kare, loo_error, select_ridge
from .spectrum import EmpiricalSpectrum, PowerLawFit, empirical_spectrum, fit_power_law
from .theory import (LearningCurve, gamma, generalization_error, learning_curve, mode_errors,
                     solve_kappa, training_error, white_spectrum_error)

# ``double_descent`` is both a module and its main function: binding the function after the
# submodule import keeps the function in place.
from .double_descent import (DoubleDescent, double_descent, modelwise_double_descent,  # noqa: E402
                             ridgewise_double_descent, samplewise_double_descent)
from .random_features import (RFLearningCurve, kernel_limit_error, random_relu_weights,  # noqa: E402
                              relu_feature_kernel, relu_random_features, rf_learning_curve,
                              rf_test_errors)

__all__ = ["TailModel", "complete_spectrum", "fit_tail", "TailQuadrature", "quadrature_spectrum", "tail_quadrature", "theory_converged",
    "LearningCurve", "solve_kappa", "gamma", "mode_errors", "generalization_error",
    "training_error", "learning_curve", "white_spectrum_error",
    "EigenlearningPrediction", "effective_regularization", "learnabilities",
    "conservation_residual", "overfitting_coefficient", "eigenlearning_predict",
    "EmpiricalSpectrum", "PowerLawFit", "empirical_spectrum", "fit_power_law",
    "EmpiricalCurve", "LearningCurves", "empirical_learning_curve", "theory_learning_curve",
    "heldout_error", "learning_curves", "gather",
    "RidgeSelection", "gcv", "kare", "loo_error", "select_ridge",
    "Predictions", "gradient_flow", "gradient_descent", "mse_loss", "ntk_gp",
]

__all__ += ["DoubleDescent", "double_descent", "samplewise_double_descent",
            "ridgewise_double_descent", "modelwise_double_descent", "RFLearningCurve",
            "rf_learning_curve", "rf_test_errors", "kernel_limit_error", "random_relu_weights",
            "relu_random_features", "relu_feature_kernel"]
