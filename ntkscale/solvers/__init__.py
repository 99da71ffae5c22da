"""Solvers on a Gram operator: LAPACK / out-of-core Cholesky, Nyström-PCG, ridgeless.

They see the operator contract of :mod:`ntkscale.linop` (``shape``, ``diag``, ``matvec``,
block reads, ``in_memory``, the optional ``factorize``), never a kernel, a store or a
concrete operator class; the typed errors live in :mod:`ntkscale.errors`.
"""

from ..errors import ConvergenceWarning, JitterWarning, NotConvergedError, NotPositiveDefiniteError
from .api import SOLVERS, dense_limit, solve
from .cholesky import cholesky_solve
from .dynamics import gradient_descent_op, gradient_flow_op
from .eigen import EigResult, randomized_eigh
from .krylov import KrylovResult, krylov_descent, krylov_flow, lanczos_matfuncs
from .nystrom import NystromApprox, nystrom
from .pcg import pcg, pcg_path
from .result import SolveResult
from .ridgeless import minnorm_cg, minnorm_eigh

__all__ = ["solve", "cholesky_solve", "randomized_eigh", "EigResult", "dense_limit", "SOLVERS",
           "pcg", "pcg_path", "nystrom", "NystromApprox", "minnorm_eigh", "minnorm_cg",
           "SolveResult", "NotPositiveDefiniteError", "NotConvergedError", "ConvergenceWarning",
           "JitterWarning", "gradient_flow_op", "gradient_descent_op", "KrylovResult",
           "krylov_flow", "krylov_descent", "lanczos_matfuncs"]

