"""A real multi-process Dask cluster: ``dask scheduler`` + 2 ``dask worker`` OS processes.

``dask_processes`` yields a :class:`DaskProcesses` (address, TLS paths, ``cluster_table``
ready for ``validate_cluster``/a job file). Plain TCP by default; TLS through indirect
parametrisation::

    @pytest.mark.parametrize("dask_processes", [False, True], indirect=True, ids=["tcp", "tls"])
    def test_x(dask_processes): ...

Other test directories can reuse it with ``from deploy.conftest import dask_processes``
in their ``conftest.py`` (``tests/`` is on ``sys.path`` under pytest's default import mode).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from ntkscale.runner import pinned_env

REPO = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO / "deploy" / "tls" / "make-certs.sh"


@dataclass
class DaskProcesses:
    """What ``dask_processes`` yields."""

    address: str
    tls: bool
    tls_table: Optional[dict[str, Any]] = None  # the [cluster.tls] table (client certificate)
    cert_dir: Optional[Path] = None
    pids: list[int] = field(default_factory=list)  # scheduler first, then workers

    @property
    def cluster_table(self) -> dict[str, Any]:
        """``[cluster]`` table that connects to these processes (``kind = "address"``)."""
        t: dict[str, Any] = {"kind": "address", "address": self.address}
        if self.tls_table:
            t["tls"] = dict(self.tls_table)
        return t

    def security(self) -> Any:
        """A client ``distributed.security.Security`` (``None`` without TLS)."""
        if not self.tls:
            return None
        from distributed.security import Security

        t = self.tls_table
        return Security(tls_ca_file=t["ca_file"], tls_client_cert=t["cert_file"],
                        tls_client_key=t["key_file"], require_encryption=True)


def make_certs(directory: Path, *hosts: str) -> dict[str, str]:
    """Run ``deploy/tls/make-certs.sh`` into ``directory``; the parsed [cluster.tls] table."""
    import tomllib

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (needed by deploy/tls/make-certs.sh)")
    out = subprocess.run(["bash", str(MAKE_CERTS), str(directory), *hosts], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return tomllib.loads(out)["cluster"]["tls"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NTKSCALE_CLUSTER_")}
    env.update(pinned_env(1))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def start_dask_processes(workdir: Path, tls: bool = False, n_workers: int = 2,
                         timeout: float = 60.0) -> Iterator[DaskProcesses]:
    """Start a scheduler and ``n_workers`` single-threaded workers on 127.0.0.1; stop them after."""
    from distributed import Client

    workdir.mkdir(parents=True, exist_ok=True)
    tls_table = make_certs(workdir / "certs") if tls else None
    port = free_port()
    proto = "tls" if tls else "tcp"
    address = f"{proto}://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    sched_tls = worker_tls = []
    if tls_table:
        sched_tls = ["--tls-ca-file", tls_table["ca_file"], "--tls-cert", tls_table["scheduler_cert_file"],
                     "--tls-key", tls_table["scheduler_key_file"]]
        worker_tls = ["--tls-ca-file", tls_table["ca_file"], "--tls-cert", tls_table["worker_cert_file"],
                      "--tls-key", tls_table["worker_key_file"]]
    cmds = [[*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--protocol", proto,
             "--no-dashboard", *sched_tls]]
    cmds += [[*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
              "--no-dashboard", "--memory-limit", "1GiB", "--name", f"w{i}", "--death-timeout", "30",
              "--local-directory", str(workdir / f"w{i}"), *worker_tls] for i in range(n_workers)]
    procs: list[subprocess.Popen] = []
    logs = []
    env = _child_env()
    try:
        for i, cmd in enumerate(cmds):
            log = open(workdir / f"proc{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir))
        info = DaskProcesses(address=address, tls=tls, tls_table=tls_table,
                             cert_dir=workdir / "certs" if tls else None, pids=[p.pid for p in procs])
        t0 = time.monotonic()
        while True:  # the scheduler must be listening before a client can connect
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"dask process {dead} exited:\n" + (workdir / f"proc{dead[0]}.log").read_text())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"scheduler did not listen on {address} within {timeout:.0f}s")
            time.sleep(0.2)
        with Client(address, security=info.security(), timeout=timeout) as c:
            c.wait_for_workers(n_workers, timeout=timeout)
        yield info
    finally:  # workers first (they say goodbye to a live scheduler), then the scheduler
        for group in (procs[1:], procs[:1]):
            for p in group:
                if p.poll() is None:
                    p.terminate()
            for p in group:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def dask_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[DaskProcesses]:
    """``dask scheduler`` + two ``dask worker --nthreads 1`` processes (pinned BLAS) on 127.0.0.1.

    ``request.param`` (indirect parametrisation) switches TLS on; default off.
    """
    tls = bool(getattr(request, "param", False))
    with start_dask_processes(tmp_path_factory.mktemp("tls" if tls else "tcp"), tls=tls) as info:
        yield info
