"""The jitted JAX functions behind :mod:`ntkscale.empirical.ntk` (row Jacobians, their
contraction, NTK-vector products, diagonals, outputs), built once on first use."""

from __future__ import annotations

from typing import Any, Callable

from ._model import Static, jax_modules

__all__ = ["jitted"]

_FNS: dict[str, Callable[..., Any]] = {}  # the jitted kernels, built on first use


def jitted() -> dict[str, Callable[..., Any]]:
    """The jitted building blocks; the model's :class:`Static` part is a static argument,
    so repeated calls with one model function compile once per block shape."""
    if _FNS:
        return _FNS
    jax, jnp = jax_modules()
    hi = jax.lax.Precision.HIGHEST
    specs = {"trace": "iop,jop->ij", "diagonal": "iop,jop->ijo", "full": "iop,jqp->ijoq"}

    def jac(static: Static, diff: list, aux: list, x: Any) -> list:
        J = jax.vmap(jax.jacrev(static.row), in_axes=(None, None, 0))(diff, aux, x)
        return [j.reshape(j.shape[0], j.shape[1], -1) for j in J]  # leaves (b, k, p_leaf)

    def contract(J1: list, J2: list, mode: str) -> Any:
        out = sum(jnp.einsum(specs[mode], a, b, precision=hi) for a, b in zip(J1, J2))
        return out / J1[0].shape[1] if mode == "trace" else out

    def k_of(static: Static, diff: list, aux: list, xi: Any) -> tuple[int, Any]:
        out = jax.eval_shape(static.row, diff, aux, xi)
        return out.shape[0], out.dtype

    def ntvp(static: Static, diff: list, aux: list, x1: Any, x2: Any, mode: str) -> Any:
        k, dt = k_of(static, diff, aux, x2[0])

        def f1(d: list) -> Any:
            return static.outputs(d, aux, x1)  # (b1, k)

        def per_output(o: Any) -> Any:
            e = jax.nn.one_hot(o, k, dtype=dt)

            def per_row(xj: Any) -> Any:
                _, vjp = jax.vjp(lambda d: static.row(d, aux, xj), diff)
                (t,) = vjp(e)  # J2[j, o]^T, a P-vector as a pytree like diff
                jv = jax.jvp(f1, (diff,), (t,))[1]  # (b1, k): Theta[:, j, :, o]
                return jv if mode == "full" else jv[:, o]

            return jax.vmap(per_row)(x2)

        res = jax.lax.map(per_output, jnp.arange(k))  # (k, b2, b1[, k])
        if mode == "full":
            return res.transpose(2, 1, 3, 0)  # (b1, b2, k, k')
        res = res.transpose(2, 1, 0)  # (b1, b2, k)
        return res.mean(-1) if mode == "trace" else res

    def diag_jac(static: Static, diff: list, aux: list, x: Any) -> Any:
        return sum((j * j).sum(-1) for j in jac(static, diff, aux, x))  # (b, k)

    def diag_ntvp(static: Static, diff: list, aux: list, x: Any) -> Any:
        k, dt = k_of(static, diff, aux, x[0])

        def per_output(o: Any) -> Any:
            e = jax.nn.one_hot(o, k, dtype=dt)

            def per_row(xi: Any) -> Any:
                _, vjp = jax.vjp(lambda d: static.row(d, aux, xi), diff)
                (t,) = vjp(e)
                return sum((leaf * leaf).sum() for leaf in t)

            return jax.vmap(per_row)(x)

        return jax.lax.map(per_output, jnp.arange(k)).T  # (b, k)

    def outputs(static: Static, diff: list, aux: list, x: Any) -> Any:
        return static.outputs(diff, aux, x)

    def vp(static: Static, diff: list, aux: list, x1: Any, x2: Any, v: Any) -> Any:
        _, vjp = jax.vjp(lambda d: static.outputs(d, aux, x2), diff)
        (t,) = vjp(v)
        return jax.jvp(lambda d: static.outputs(d, aux, x1), (diff,), (t,))[1]

    st = dict(static_argnums=(0,))
    _FNS.update(
        jac=jax.jit(jac, **st), contract=jax.jit(contract, static_argnums=(2,)),
        ntvp=jax.jit(ntvp, static_argnums=(0, 5)), diag_jacobian=jax.jit(diag_jac, **st),
        diag_ntvp=jax.jit(diag_ntvp, **st), outputs=jax.jit(outputs, **st), vp=jax.jit(vp, **st))
    return _FNS
