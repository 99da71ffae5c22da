"""NTKClassifier: kernel regression on one-hot targets, labels by argmax."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ._base import NTKBase

__all__ = ["NTKClassifier"]


class NTKClassifier(ClassifierMixin, NTKBase):
    """Infinite-width NTK / NNGP classifier: regression on one-hot targets
    (1 for the class, 0 elsewhere; ``C`` columns even for two classes), label = argmax.

    Same parameters as :class:`NTKRegressor`. ``classes_`` holds the labels;
    :meth:`decision_function` the (m, C) regression scores.
    """

    def fit(self, X: Any, y: Any) -> "NTKClassifier":
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"NTKClassifier needs at least 2 classes, got {self.classes_.size} class(es) "
                             f"({self.classes_.tolist()})")
        Y = np.zeros((len(codes), self.classes_.size))
        Y[np.arange(len(codes)), codes] = 1.0
        return self._fit(X, Y)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (m, C); for two classes, the (m,) score of ``classes_[1]`` minus ``classes_[0]``."""
        S = self._predict(X, False)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict(self, X: Any) -> np.ndarray:
        """Labels (m,)."""
        S = self._predict(X, False)
        return self.classes_[np.argmax(S, axis=1)]
