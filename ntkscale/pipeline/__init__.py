"""The fit/predict core under both the estimators and the job.

One function per step, each used by :class:`ntkscale.NTKRegressor` /
:class:`ntkscale.NTKClassifier` (the scikit-learn facade) and by the job stages ``gram``,
``fit`` and ``predict``; the planner reads :func:`stored_kinds`::

    kinds = stored_kinds(kernel, store_nngp)              # what a store holds
    gram = gram_operator(arch, X, kernel, store=url, kinds=kinds, client=...)  # get or build
    choice = resolve_ridge(gram.op, Y, ridge, relative=True)                   # λ (or GCV/LOO)
    res = fit(gram.op, Y, choice.ridge, solver="auto")                         # (K + λI) α = Y
    build_id = check_store(url, X, arch)                  # the store still holds this Gram
    Y_test = predict(arch, X_test, res.alpha, kernel, store=url, build_id=build_id)

Classification regresses :func:`encode_classes` (centred one-hot) and reads labels with
:func:`decode_classes`, for the estimator and the job alike.

Above operator, tiling, solvers and spectral; below estimators and job
(``tests/test_layers.py``).
"""

from .cross import BATCH, cross_products, cross_row_blocks, predict
from .gram import (KINDS, TrainGram, build_store, check_store, gram_operator, preflight_store, store_kinds,
                   stored_kinds)
from .solve import RIDGE_RULES, FitResult, RidgeChoice, fit, resolve_ridge
from .runs import SavedFit, load_fit
from .targets import decode_classes, encode_classes, encode_targets

__all__ = ["KINDS", "RIDGE_RULES", "BATCH", "stored_kinds", "store_kinds", "build_store",
           "check_store", "preflight_store", "TrainGram", "gram_operator", "RidgeChoice", "resolve_ridge",
           "FitResult", "fit", "cross_products", "cross_row_blocks", "predict", "encode_classes",
           "decode_classes", "encode_targets", "SavedFit", "load_fit"]
