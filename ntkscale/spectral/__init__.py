"""Spectral analysis of kernel regression: pure functions of eigenpairs and targets.

No dask, no zarr, no I/O: numpy/scipy only. Modules:

* :mod:`.theory` -- Bordelon/Canatar learning curves (kappa, gamma, E_g, training error);
* :mod:`.eigenlearning` -- Simon et al. learnabilities and conservation law;
* :mod:`.spectrum` -- empirical spectra and target weights from a Gram ``eigh``, power-law fits;
* :mod:`.selection` -- GCV, KARE, closed-form LOO and ridge selection;
* :mod:`.dynamics` -- gradient-flow / GD predictions and the NTK-GP ensemble.
"""

from .dynamics import Predictions, gradient_descent, gradient_flow, mse_loss, ntk_gp
from .eigenlearning import (EigenlearningPrediction, conservation_residual,
                            effective_regularization, eigenlearning_predict, learnabilities,
                            overfitting_coefficient)
from .selection import RidgeSelection, gcv, kare, loo_error, select_ridge
from .spectrum import EmpiricalSpectrum, PowerLawFit, empirical_spectrum, fit_power_law
from .theory import (LearningCurve, gamma, generalization_error, learning_curve, mode_errors,
                     solve_kappa, training_error, white_spectrum_error)

__all__ = [
    "LearningCurve", "solve_kappa", "gamma", "mode_errors", "generalization_error",
    "training_error", "learning_curve", "white_spectrum_error",
    "EigenlearningPrediction", "effective_regularization", "learnabilities",
    "conservation_residual", "overfitting_coefficient", "eigenlearning_predict",
    "EmpiricalSpectrum", "PowerLawFit", "empirical_spectrum", "fit_power_law",
    "RidgeSelection", "gcv", "kare", "loo_error", "select_ridge",
    "Predictions", "gradient_flow", "gradient_descent", "mse_loss", "ntk_gp",
]
