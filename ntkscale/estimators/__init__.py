"""scikit-learn style estimators over the whole pipeline (Gram → solver → predictions)."""

from ._base import default_arch
from .classifier import NTKClassifier
from .regressor import NTKRegressor

__all__ = ["NTKRegressor", "NTKClassifier", "default_arch"]
