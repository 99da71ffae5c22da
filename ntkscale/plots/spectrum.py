"""Eigenvalue spectrum of a Gram (log-log, with its power-law fit) and cumulative target power."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from ..spectral.spectrum import EmpiricalSpectrum, PowerLawFit
from ._base import PathLike, finish, finite_1d, new_figure

__all__ = ["plot_spectrum"]

# A fit whose line sits this many times above/below the plotted eigenvalues (geometric mean
# over its window) was computed on other eigenvalues: usually those of K instead of K/n.
_MISMATCH_FACTOR = 10.0


def _eigenvalues(src: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(eigenvalues of K/n, descending; cumulative target power or None)."""
    if isinstance(src, EmpiricalSpectrum):
        eta = finite_1d(src.eta, "spectrum.eta")
        cum = finite_1d(src.cumulative_power, "spectrum.cumulative_power")
        if cum.shape != eta.shape:
            raise ValueError(f"spectrum.cumulative_power has shape {cum.shape}, eta {eta.shape}")
        if np.any(np.diff(eta) > 0):
            raise ValueError("spectrum.eta must be in descending order (as empirical_spectrum "
                             "returns it), so that cumulative_power matches the ranks")
        return eta, cum
    if hasattr(src, "evals") and hasattr(src, "evecs"):  # EigResult: eigenvalues of K itself
        n = int(np.shape(src.evecs)[0])
        return np.sort(finite_1d(src.evals, "evals"))[::-1] / n, None
    if isinstance(src, PowerLawFit):
        raise TypeError("the first argument is the spectrum; pass the PowerLawFit as fit=")
    return np.sort(finite_1d(src, "eigenvalues"))[::-1], None


def plot_spectrum(spectrum_or_evals: Any, fit: Optional[PowerLawFit] = None,
                  path: Optional[PathLike] = None, *, title: Optional[str] = None,
                  dpi: int = 120) -> Any:
    """Eigenvalues of ``K/n`` vs rank (log-log), a power-law fit, and cumulative target power.

    Parameters
    ----------
    spectrum_or_evals : EmpiricalSpectrum, EigResult or array_like, shape (N,)
        * :class:`~ntkscale.spectral.EmpiricalSpectrum`: ``eta`` (eigenvalues of ``K/M``) and,
          in a second panel, ``cumulative_power`` ``C(k)`` vs rank;
        * an object with ``evals`` (of ``K``) and ``evecs`` (n, k), e.g.
          :class:`~ntkscale.solvers.EigResult`: plots ``evals / n``;
        * an array: eigenvalues plotted as given (divide those of ``K`` by n first).

        Eigenvalues are sorted descending, rank k = 1 is the largest. Only the positive ones
        can sit on a log axis: zeros and round-off negatives are left out of the line.
    fit : PowerLawFit, optional
        From :func:`~ntkscale.spectral.fit_power_law` *of the plotted eigenvalues*: drawn as
        ``prefactor · k^-exponent`` on its ranks ``kmin..kmax``. A fit more than 10x off the
        eigenvalues over its window (fitted on ``K`` rather than ``K/n``?) warns.
    path : str or PathLike, optional
        Save the figure there (PNG unless the suffix names another format).
    title : str, optional
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
        Axes 0: lines ``"eigenvalues"`` and (with ``fit``) ``"power-law fit"``; axes 1 (an
        EmpiricalSpectrum only): line ``"cumulative target power"``.

    Raises
    ------
    ValueError
        Non-finite, empty or multi-dimensional eigenvalues, none of them positive.
    TypeError
        ``fit`` is not a PowerLawFit.
    ImportError
        Without matplotlib (``pip install 'ntkscale[plots]'``).

    References
    ----------
    Bordelon, Canatar & Pehlevan, ICML 2020 (power-law spectra and learning curves);
    Canatar, Bordelon & Pehlevan, Nat. Commun. 12, 2914 (2021), Fig. 2 (cumulative power
    ``C(k)``, task-model alignment).
    """
    eta, cum = _eigenvalues(spectrum_or_evals)
    if fit is not None and not isinstance(fit, PowerLawFit):
        raise TypeError(f"fit must be a PowerLawFit (ntkscale.spectral.fit_power_law), got "
                        f"{type(fit).__name__}")
    ranks = np.arange(1, eta.size + 1, dtype=np.float64)
    pos = eta > 0
    if not np.any(pos):
        raise ValueError("no positive eigenvalue to plot on a log axis")
    fig, axes = new_figure(2 if cum is not None else 1)
    ax = axes[0]
    ax.plot(ranks[pos], eta[pos], ".", ms=3, label="eigenvalues")
    if fit is not None:
        k = np.arange(fit.kmin, fit.kmax + 1, dtype=np.float64)
        line = fit.prefactor * k ** (-fit.exponent)
        ax.plot(k, line, "-", lw=1.5, label=f"power-law fit: k^-{fit.exponent:.3g} "
                f"(k = {fit.kmin}..{fit.kmax})")
        i = np.arange(fit.kmin, min(fit.kmax, eta.size) + 1) - 1  # window ranks in the data
        i = i[eta[i] > 0]
        if i.size:
            off = float(np.exp(np.mean(np.log(eta[i] / line[i + 1 - fit.kmin]))))
            if not 1 / _MISMATCH_FACTOR < off < _MISMATCH_FACTOR:
                warnings.warn(f"the power-law fit lies {1 / off:.3g}x the plotted eigenvalues over "
                              f"ranks {fit.kmin}..{fit.kmax}: fit the same eigenvalues you plot "
                              "(those of K/n, e.g. fit_power_law(evals / n))", stacklevel=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue of K/n")
    ax.legend(fontsize="small")
    if cum is not None:
        ax2 = axes[1]
        ax2.plot(ranks, cum, "-", label="cumulative target power")
        ax2.set_xscale("log")
        ax2.set_ylim(0.0, 1.02)
        ax2.set_xlabel("rank k")
        ax2.set_ylabel("C(k): target power in the top k modes")
        ax2.legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    return finish(fig, path, dpi)
