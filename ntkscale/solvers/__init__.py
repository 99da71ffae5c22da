"""Solvers on a Gram operator: LAPACK / out-of-core Cholesky, Nyström-PCG, ridgeless.

They see an operator (``shape``, ``diag``, ``matvec``, block reads), never a kernel;
only the tiled Cholesky hands its tile graph to :mod:`ntkscale.tiling`.
"""

from .api import SOLVERS, dense_limit, solve
from .dynamics import gradient_descent_op, gradient_flow_op
from .errors import ConvergenceWarning, JitterWarning, NotConvergedError, NotPositiveDefiniteError
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


def __getattr__(name: str):
    # lazy: solvers.cholesky imports tiling.cholesky, which imports solvers.errors; an
    # eager import here would be circular when a worker unpickles a tiling task first
    if name == "cholesky_solve":
        from .cholesky import cholesky_solve

        return cholesky_solve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
