"""The spectrum beyond the top k eigenpairs by Lanczos quadrature of the deflated Gram.

The learning-curve theory needs two spectral measures of ``K_M/M`` (M pool samples) beyond the
k computed pairs ``(η_ρ, V_ρ)``: the *counting* measure of the tail eigenvalues (it sets
``κ`` and ``γ``) and, per output c, the *target* measure ``Σ_{ρ>k} v²_ρc δ(η − η_ρ)`` (it sets
the unlearned power). Both are spectral measures of the deflated operator

    A = P K_M P / M,      P = I − V Vᵀ,

seen from a starting vector: the target measure from ``b = P y_c / √M`` (weights
``(u_ρᵀ b)²`` sum to the tail power ``‖b‖²``), the counting measure as the expectation over
random ``z`` of the measure from ``b = P z`` (Hutchinson: ``E zᵀ f(A) z = tr f(A)``).

m steps of Lanczos from ``b`` give the tridiagonal ``T_m``; its eigenvalues ``θ_i`` and the
squared first components ``τ_i²`` of its eigenvectors are the m-point Gauss quadrature of the
measure from ``b``:  ``bᵀ f(A) b ≈ ‖b‖² Σ_i τ_i² f(θ_i)``, exact for polynomials of degree
``< 2m`` (Golub & Meurant). The theory's integrands (``η/(pη + κ)``, ``κ²/(pη + κ)²``) are
smooth on the tail's interval ``[0, η_{k+1}]`` for ``κ > 0``; the error falls like
``((√c − 1)/(√c + 1))^{2m}``, ``c ~ η_{k+1}·p/κ`` (Ubaru, Chen & Saad 2017): a few steps where
``κ`` stays near the tail's eigenvalues, more where it falls far below them (large p on a tail
that spans many decades, as a low-dimensional input's kernel has). So the steps are not fixed:
:func:`theory_converged` stops them once the theory itself stops moving (120 000 Fashion-MNIST
images: settled at 5-10 steps for p ≤ 16 384, 30 steps with p = n checked; 12 000 diamonds,
d = 9, k = 50: 90 steps). The
counting measure's probe noise is that of Hutchinson's estimator over M − k modes (relative
``~ (2/(q (M − k)_eff))^{1/2}`` for q probes); the weights are scaled so they count exactly the
``M − k`` tail modes.

This replaces a model of the tail's *shape* (:mod:`ntkscale.spectral.tail`, power laws) by a
measurement: every step is one pass over the Gram with ``C + q`` columns. On a Fashion-MNIST
NTK pool of 12 000 images the tail's eigenvalues follow no single law (log-slope ~1 above rank
~1000, ~0.5 below, then a bulk near the smallest ones), which is what limits the power-law
model; with the quadrature the theory from the top 50, 200 or 500 pairs matches the
full-spectrum theory within 0.15 % up to p = 10 000 (``benchmarks/bench_tail.py``,
``benchmarks/RESULTS.md`` §00000h).

References
----------
Golub & Meurant, "Matrices, Moments and Quadrature with Applications", Princeton (2010), ch. 6;
Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J.
Matrix Anal. Appl. 38 (2017) 1075; Hutchinson, Commun. Stat. Simul. Comput. 19 (1990) 433.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["TailQuadrature", "tail_quadrature", "quadrature_spectrum", "theory_converged"]


@dataclass(frozen=True)
class TailQuadrature:
    """Lanczos recurrences of the deflated Gram ``P K P / M`` (see the module docstring).

    Attributes
    ----------
    alpha : ndarray, shape (m, b)
        Diagonals of the b tridiagonals (one per starting vector), m steps.
    beta : ndarray, shape (m - 1, b)
        Off-diagonals.
    length : ndarray of int, shape (b,)
        Steps each recurrence ran (fewer than m after an invariant subspace was found).
    norm2 : ndarray, shape (b,)
        ``‖b‖²`` of each starting vector.
    outputs : int
        C: the first C recurrences start from the targets, the rest from random probes.
    modes : float
        ``M − k``, the tail's number of modes (the counting measure's total weight).
    """

    alpha: np.ndarray
    beta: np.ndarray
    length: np.ndarray
    norm2: np.ndarray
    outputs: int
    modes: float

    @property
    def steps(self) -> int:
        return int(self.alpha.shape[0])

    def gauss(self, j: int, steps: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Gauss nodes (≥ 0) and weights (summing to ``norm2[j]``) of recurrence j, with its
        first ``steps`` steps (default all)."""
        m = int(min(self.length[j], self.steps if steps is None else steps))
        if m == 0 or self.norm2[j] == 0:
            return np.zeros(0), np.zeros(0)
        T = np.diag(self.alpha[:m, j]) + np.diag(self.beta[:m - 1, j], 1) + np.diag(self.beta[:m - 1, j], -1)
        theta, U = np.linalg.eigh(T)
        return np.clip(theta, 0.0, None), self.norm2[j] * U[0] ** 2

    def truncated(self, steps: int) -> "TailQuadrature":
        """The same recurrences cut to their first ``steps`` steps (a convergence check: the
        theory from ``steps // 2`` against all)."""
        m = max(1, min(int(steps), self.steps))
        return TailQuadrature(alpha=self.alpha[:m], beta=self.beta[:m - 1], length=np.minimum(self.length, m),
                              norm2=self.norm2, outputs=self.outputs, modes=self.modes)

    def leave_one_probe_out(self) -> list["TailQuadrature"]:
        """One quadrature per probe with that probe left out (jackknife of the counting
        measure's Hutchinson noise: ``SE² = (q − 1)/q Σ_j (f_j − f̄)²``)."""
        C, q = self.outputs, self.alpha.shape[1] - self.outputs
        out = []
        for j in range(q):
            keep = list(range(C)) + [C + i for i in range(q) if i != j]
            out.append(TailQuadrature(alpha=self.alpha[:, keep], beta=self.beta[:, keep],
                                      length=self.length[keep], norm2=self.norm2[keep], outputs=C,
                                      modes=self.modes))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for ``np.savez``); :meth:`from_arrays` reads them back."""
        return {"lanczos_alpha": self.alpha, "lanczos_beta": self.beta, "lanczos_length": self.length,
                "lanczos_norm2": self.norm2, "lanczos_outputs": np.int64(self.outputs),
                "lanczos_modes": np.float64(self.modes)}

    @classmethod
    def from_arrays(cls, a: Any) -> Optional["TailQuadrature"]:
        """From :meth:`to_arrays`'s keys in a mapping (an ``np.load`` result); None if absent."""
        if "lanczos_alpha" not in a:
            return None
        return cls(alpha=np.asarray(a["lanczos_alpha"]), beta=np.asarray(a["lanczos_beta"]),
                   length=np.asarray(a["lanczos_length"]), norm2=np.asarray(a["lanczos_norm2"]),
                   outputs=int(a["lanczos_outputs"]), modes=float(a["lanczos_modes"]))


def _matmat(op: Any) -> Callable[[np.ndarray], np.ndarray]:
    if callable(op) and not hasattr(op, "matvec"):
        return op
    if hasattr(op, "matvec"):
        return op.matvec
    A = np.asarray(op, dtype=np.float64)
    return lambda X: A @ X


def tail_quadrature(op: Any, evecs: Any, y: Any, *, steps: int = 20, probes: int = 8, seed: int = 0,
                    max_steps: Optional[int] = None,
                    converged: Optional[Callable[[TailQuadrature], bool]] = None,
                    check_every: int = 10) -> TailQuadrature:
    """Lanczos recurrences for the tail measures of ``K_M/M`` past the k eigenvectors.

    Parameters
    ----------
    op : GramOperator, array of shape (M, M), or callable
        ``K_M`` (``op.matvec(X)`` / ``op @ X`` / ``op(X)`` for X of shape (M, b)).
    evecs : array_like, shape (M, k)
        Orthonormal top eigenvectors (deflated: the recurrences run in their complement).
    y : array_like, shape (M,) or (M, C)
        Targets.
    steps : int
        Lanczos steps m (= passes over the Gram with ``C + probes`` columns); with
        ``converged``, the first check.
    probes : int
        Random ±1 probes for the counting measure.
    seed : int
    max_steps : int, optional
        With ``converged``: steps go on, ``check_every`` at a time, until it returns True or
        ``max_steps`` (default ``steps``: no checks).
    converged : callable, optional
        ``converged(q) -> bool`` on the recurrences so far (e.g. :func:`theory_converged`).
    check_every : int

    Returns
    -------
    TailQuadrature

    Notes
    -----
    Each recurrence is the symmetric Lanczos process kept so in floating point by full
    reorthogonalization against its own basis and against ``evecs`` (memory ``m·M·(C + q)``
    floats: 270 MB at M = 120 000, m = 20, C + q = 18).
    """
    V = np.asarray(evecs, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    M, k = V.shape
    if Y.shape[0] != M:
        raise ValueError(f"y must have {M} rows (one per pool sample), got {Y.shape}")
    if k >= M:
        raise ValueError(f"evecs already hold all {M} eigenvectors: there is no tail to measure")
    top = max(int(steps), int(max_steps or 0))
    if steps < 1 or probes < 1 or check_every < 1:
        raise ValueError(f"steps, probes and check_every must be >= 1, got {steps}, {probes}, {check_every}")
    apply = _matmat(op)
    Z = np.random.default_rng(seed).choice([-1.0, 1.0], size=(M, probes))

    def deflate(X: np.ndarray) -> np.ndarray:
        return X - V @ (V.T @ X) if k else X

    B = deflate(deflate(np.hstack([Y / np.sqrt(M), Z])))
    norm2 = np.sum(B * B, axis=0)
    m_max = min(top, M - k)
    Q: list[np.ndarray] = []
    alpha: list[np.ndarray] = []
    beta: list[np.ndarray] = []
    length = np.zeros(B.shape[1], dtype=np.int64)
    active = norm2 > 0
    q = np.divide(B, np.sqrt(norm2), out=np.zeros_like(B), where=active)

    def result() -> TailQuadrature:
        a = np.array(alpha)
        return TailQuadrature(alpha=a, beta=np.array(beta[:len(alpha) - 1]).reshape(-1, a.shape[1]),
                              length=length.copy(), norm2=norm2, outputs=Y.shape[1], modes=float(M - k))

    for j in range(m_max):
        Q.append(q)
        length[active] = j + 1
        W = deflate(np.asarray(apply(q), dtype=np.float64) / M)
        alpha.append(np.sum(q * W, axis=0))
        for _ in range(2):  # full reorthogonalization (twice is enough), basis then evecs
            for u in Q:
                W -= u * np.sum(u * W, axis=0)
            W = deflate(W)
        done = j + 1 >= min(int(steps), m_max) and (
            j + 1 == m_max or (converged is not None and (j + 1 - steps) % check_every == 0
                               and converged(result())))
        bj = np.sqrt(np.sum(W * W, axis=0))
        scale = np.maximum(np.abs(np.array(alpha)).max(axis=0), 1e-300)
        active &= bj > 1e-12 * scale  # an invariant subspace: the quadrature is exact there
        if done or not active.any():
            break
        beta.append(np.where(active, bj, 0.0))
        q = np.divide(W, bj, out=np.zeros_like(W), where=active)
    return result()


def theory_converged(eta: Any, v2: Any, p: Any, lam: float, tol: float = 0.005,
                     back: int = 10) -> Callable[[TailQuadrature], bool]:
    """A ``converged`` rule for :func:`tail_quadrature`: the learning-curve theory (pool error,
    top-k pairs + the quadrature) at sizes ``p`` moves by less than ``tol`` (relative, max over
    p) between the recurrences' last ``back`` steps and all of them.

    Parameters
    ----------
    eta : array_like, shape (k,)
    v2 : array_like, shape (k,) or (k, C)
    p : array_like, shape (P,)
        Sizes to check: the hardest are the largest (smallest ``κ``), e.g. up to M.
    lam : float
        Absolute ridge; smaller is harder.
    tol : float
    back : int
    """
    from .theory import learning_curve

    ps = np.asarray(p, dtype=np.float64)

    def theory(q: TailQuadrature) -> np.ndarray:
        e, w, mu = quadrature_spectrum(eta, v2, q)
        return learning_curve(e, w, ps, lam=lam, multiplicity=mu).Eg

    def rule(q: TailQuadrature) -> bool:
        if q.steps <= back:
            return False
        now, before = theory(q), theory(q.truncated(q.steps - back))
        return bool(np.all(np.abs(now - before) <= tol * np.abs(now)))

    return rule


def quadrature_spectrum(eta: Any, v2: Any, quad: TailQuadrature,
                        steps: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-k spectrum followed by the tail's quadrature nodes, as a weighted spectrum.

    Parameters
    ----------
    eta : array_like, shape (k,)
        Top eigenvalues of ``K_M/M``.
    v2 : array_like, shape (k,) or (k, C)
        Their target power per output.
    quad : TailQuadrature
    steps : int, optional
        Use the first ``steps`` Lanczos steps (default all): a convergence check.

    Returns
    -------
    eta : ndarray, shape (N,)
        Top eigenvalues, then the counting measure's nodes, then each output's target nodes.
    v2 : ndarray, shape (N, C)
        Target power: the top pairs', 0 on counting nodes, each output's quadrature weights
        in its own column.
    multiplicity : ndarray, shape (N,)
        1 for the top pairs, the counting measure's weights (summing to ``M − k``), 0 on
        target nodes: the ``multiplicity`` of :func:`ntkscale.spectral.theory.learning_curve`.
    """
    e = np.asarray(eta, dtype=np.float64).reshape(-1)
    w = np.asarray(v2, dtype=np.float64)
    w = w[:, None] if w.ndim == 1 else w
    C = quad.outputs
    if w.shape != (e.size, C):
        raise ValueError(f"v2 must have shape ({e.size}, {C}) (the quadrature's outputs), got {w.shape}")
    probe = [quad.gauss(j, steps) for j in range(C, quad.alpha.shape[1])]
    nodes = np.concatenate([t for t, _ in probe])
    count = np.concatenate([c for _, c in probe])
    count = count * (quad.modes / count.sum()) if count.sum() > 0 else count
    tgt = [quad.gauss(c, steps) for c in range(C)]
    t_nodes = np.concatenate([t for t, _ in tgt])
    t_w = np.zeros((t_nodes.size, C))
    at = 0
    for c, (t, g) in enumerate(tgt):
        t_w[at:at + t.size, c] = g
        at += t.size
    return (np.concatenate([e, nodes, t_nodes]),
            np.vstack([w, np.zeros((nodes.size, C)), t_w]),
            np.concatenate([np.ones(e.size), count, np.zeros(t_nodes.size)]))
