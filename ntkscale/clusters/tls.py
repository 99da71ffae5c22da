"""``[cluster.tls]`` → :class:`distributed.security.Security`.

Dask's TLS is mutual: the scheduler, every worker and the client each present a
certificate signed by the cluster's CA (``deploy/tls/make-certs.sh`` makes one). Host
names are not checked (``check_hostname = False`` in distributed), the CA is what counts.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .._config import ConfigError
from .spec import ClusterSpec, TLSSpec

__all__ = ["make_security", "tls_cli_args"]


def _check_file(path: Optional[str], key: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"'cluster.tls.{key}' = {path!r} does not exist (relative paths are taken from "
                          f"the current directory {os.getcwd()!r}); run deploy/tls/make-certs.sh DIR to make one")


def make_security(spec: ClusterSpec, roles: tuple[str, ...] = ("client",)) -> Optional[Any]:
    """A ``Security`` for the roles this process plays, or ``None`` without ``[cluster.tls]``.

    Parameters
    ----------
    spec : ClusterSpec
    roles : tuple of str
        Roles to fill in: ``"client"`` always; ``"scheduler"`` and ``"worker"`` when this
        process starts them (``local``: all three; ``slurm``: client + scheduler + the
        worker flags written into the job script).

    Raises
    ------
    ConfigError
        A certificate file is missing.
    ImportError
        ``temporary = true`` without the ``cryptography`` package.
    """
    tls: Optional[TLSSpec] = spec.tls
    if tls is None:
        return None
    from distributed.security import Security

    if tls.temporary:
        try:
            return Security.temporary()  # always require_encryption=True (distributed sets it)
        except ImportError as e:
            raise ImportError("[cluster.tls] temporary = true needs the 'cryptography' package: "
                              "pip install cryptography (or use certificate files)") from e
    _check_file(tls.ca_file, "ca_file")
    kwargs: dict[str, Any] = {"tls_ca_file": tls.ca_file, "require_encryption": tls.require_encryption}
    for role in roles:
        cert, key = tls.role_files(role)
        _check_file(cert, f"{role}_cert_file" if cert != tls.cert_file else "cert_file")
        _check_file(key, f"{role}_key_file" if key != tls.key_file else "key_file")
        kwargs[f"tls_{role}_cert"] = cert
        if key:
            kwargs[f"tls_{role}_key"] = key
    return Security(**kwargs)


def tls_cli_args(tls: TLSSpec, role: str = "worker", directory: Optional[str] = None) -> list[str]:
    """``dask worker``/``dask scheduler`` flags for TLS (``--tls-ca-file``, ``--tls-cert``, ``--tls-key``).

    ``role`` picks the certificate (``"worker"`` or ``"scheduler"``); ``directory``
    replaces the files' directories (a Kubernetes secret mounted there).
    """
    cert, key = tls.role_files(role)

    def where(p: Optional[str]) -> Optional[str]:
        return p if directory is None or p is None else f"{directory.rstrip('/')}/{os.path.basename(p)}"

    args = ["--tls-ca-file", where(tls.ca_file), "--tls-cert", where(cert)]
    if key:
        args += ["--tls-key", where(key)]
    return [a for a in args if a is not None]
