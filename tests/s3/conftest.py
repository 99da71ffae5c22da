"""A local S3-compatible server for the object-store tests: moto's server mode.

moto runs as its own process (``python -m moto.server``) on 127.0.0.1 and a free port,
like s3fs's own test-suite: a real HTTP endpoint, so worker processes of a LocalCluster
and subprocess clients reach the same buckets (in-process mocking would not). Each test
gets a fresh bucket; credentials are moto's dummies. Skipped, with the reason, when s3fs
or moto's server (``pip install 'moto[server]'``, in the ``test`` extra) is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (the 's3' extra): no s3:// stores")
pytest.importorskip("moto.server", reason="moto's server mode is not installed (pip install 'moto[server]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (moto[server] brings it)")

KEY = SECRET = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int | None = None, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``moto.server`` on 127.0.0.1 (loopback only); the process and its endpoint URL."""
    port = port or _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"moto's S3 server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


@dataclass
class S3:
    """A fresh bucket on the moto server: ``url(name)`` is an ``s3://`` URL in it, ``options``
    the ``storage_options`` that reach it, ``fs`` a (listing-cache-free) s3fs to inspect and
    tamper with objects from the test."""

    endpoint: str
    bucket: str

    @property
    def options(self) -> dict:
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET,
                "client_kwargs": {"region_name": REGION}}

    @property
    def env(self) -> dict:
        """The same credentials as environment variables (botocore reads AWS_ENDPOINT_URL)."""
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint}

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    @property
    def fs(self):
        return s3fs.S3FileSystem(**self.options, use_listings_cache=False, skip_instance_cache=True)

    def chunk_bytes(self, name: str) -> dict[str, bytes]:
        """Every object under ``name`` but the zarr.json documents (they hold build ids) and the
        ownership marker: the same keys as ``tests/faults/conftest.chunk_bytes`` of a local store."""
        fs, root = self.fs, f"{self.bucket}/{name}"
        keys = [k for k in fs.find(root) if os.path.basename(k) not in ("zarr.json", ".ntkscale.json")]
        return {k[len(root) + 1:]: v for k, v in fs.cat(keys).items()} if keys else {}

    def n_chunks(self, name: str, array: str) -> int:
        return len(self.fs.find(f"{self.bucket}/{name}/{array}/c"))


@pytest.fixture(scope="session")
def s3_endpoint():
    proc, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


@pytest.fixture
def s3(s3_endpoint) -> S3:
    bucket = f"ntk-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                 region_name=REGION).create_bucket(Bucket=bucket)
    return S3(s3_endpoint, bucket)
