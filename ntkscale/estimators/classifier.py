"""NTKClassifier: kernel regression on centred one-hot targets, labels by argmax."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ..pipeline import decode_classes, encode_classes
from ._base import NTKBase

__all__ = ["NTKClassifier"]


class NTKClassifier(ClassifierMixin, NTKBase):
    """Infinite-width NTK / NNGP classifier: regression on centred one-hot targets
    (1 − 1/C for the class, −1/C elsewhere; ``C`` columns even for two classes), label = argmax.

    The encoding is :func:`ntkscale.pipeline.encode_classes`, the same rule as the job's
    ``fit`` stage, so on the same data, architecture and ridge rule the decision scores and
    the ridge chosen by GCV / LOO equal the job's (why centred: that module's docstring).

    Same parameters as :class:`NTKRegressor`. ``classes_`` holds the labels;
    :meth:`decision_function` the (m, C) regression scores.
    """

    def fit(self, X: Any, y: Any) -> "NTKClassifier":
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError(f"NTKClassifier needs at least 2 classes, got {self.classes_.size} class(es) "
                             f"({self.classes_.tolist()})")
        return self._fit(X, encode_classes(y, self.classes_))

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (m, C); for two classes, the (m,) score of ``classes_[1]`` minus ``classes_[0]``."""
        S = self._predict(X, False)
        return S[:, 1] - S[:, 0] if S.shape[1] == 2 else S

    def predict(self, X: Any) -> np.ndarray:
        """Labels (m,)."""
        S = self._predict(X, False)
        return decode_classes(S, self.classes_)
