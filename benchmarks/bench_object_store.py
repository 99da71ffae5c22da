"""The same Gram store on local disk and on an S3 endpoint (issue 23): build, one pass, listing.

For each tile size, rounds interleave the two stores (local, s3, local, s3, ...) on one
LocalCluster (2 single-threaded worker processes) and time, per store:

  * build  -- ``build_gram`` of a depth-2 ReLU NTK, float32, into a fresh location
  * pass   -- one ``StoredGram.matvec`` (a streaming pass over every stored tile; local disk:
              memory-mapped chunks from the page cache; S3: one GET per chunk object)
  * list   -- ``GramStore.done_chunks('ntk')``: what a resume lists before it computes anything

The S3 endpoint is moto's server (``python -m moto.server``) on 127.0.0.1: HTTP + request
parsing, objects in that process's memory, no network. It measures the per-request CPU cost
of the S3 path (botocore signing, HTTP, copies), not S3's latency. The estimate for a real S3
adds, per request, a first-byte latency and a per-stream bandwidth (stated below, change with
``--latency-ms`` / ``--stream-mbps`` / ``--list-ms``) and divides by the parallel streams (the
worker slots); it is a model, not a measurement. Medians of ``--rounds`` rounds; prints
ratios; writes ``benchmarks/results/object_store.json``.

    python benchmarks/bench_object_store.py [--n 4096] [--tiles 256 512 1024 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on 127.0.0.1 and a free port (loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("moto's server did not start (pip install 'moto[server]')")
            time.sleep(0.1)


def arch():
    from ntkscale import stax

    return stax.serial(stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu(),
                       stax.Dense(512, W_std=2 ** 0.5, b_std=0.1), stax.Relu(), stax.Dense(1))


def requests(n: int, T: int) -> dict:
    """Objects of one kind and their bytes (float32, symmetric, packed diagonal tiles)."""
    from ntkscale.storage.packed import packed_rows

    g = -(-n // T)
    off, diag = g * (g - 1) // 2, g
    off_bytes, diag_bytes = T * T * 4 + 4, packed_rows(T) * (T + 1) * 4 + 4
    return {"objects": off + diag, "bytes": off * off_bytes + diag * diag_bytes, "chunk_bytes": off_bytes,
            "list_pages": math.ceil(off / 1000) + math.ceil(diag / 1000)}


def s3_estimate(req: dict, streams: int, latency_s: float, stream_bps: float, list_s: float) -> dict:
    """Seconds of S3 I/O for a build (PUTs), a pass (GETs) and a resume's listing, in the model:
    each request costs ``latency_s`` plus its bytes at ``stream_bps``; ``streams`` run at once."""
    per_stream = (req["objects"] * latency_s + req["bytes"] / stream_bps) / streams
    return {"pass_io_s": per_stream, "build_io_s": per_stream, "list_s": req["list_pages"] * list_s,
            "latency_share": latency_s / (latency_s + req["chunk_bytes"] / stream_bps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024, 2048])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=float, default=30.0, help="S3 first-byte latency per request")
    ap.add_argument("--stream-mbps", type=float, default=80.0, help="S3 bandwidth of one stream, MB/s")
    ap.add_argument("--list-ms", type=float, default=100.0, help="one LIST page (1000 keys)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "object_store.json"))
    args = ap.parse_args()

    import s3fs
    from distributed import Client

    from ntkscale.operator import StoredGram
    from ntkscale.runner import local_cluster
    from ntkscale.storage import GramStore
    from ntkscale.tiling import build_gram

    proc, endpoint = start_moto()
    opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"}}
    fs = s3fs.S3FileSystem(**opts, use_listings_cache=False, skip_instance_cache=True)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="bench")
    X = np.random.default_rng(0).standard_normal((args.n, args.d))
    V = np.random.default_rng(1).standard_normal(args.n)
    base = tempfile.mkdtemp(prefix="bench-objstore-", dir=args.dir)
    model = dict(latency_s=args.latency_ms / 1e3, stream_bps=args.stream_mbps * 1e6, list_s=args.list_ms / 1e3)
    rows = []
    try:
        with local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            build_gram(arch(), X[:256], os.path.join(base, "warm"), get="ntk", tile=128, client=client)
            for T in args.tiles:
                times: dict = {s: {"build": [], "pass": [], "list": []} for s in ("local", "s3")}
                for r in range(args.rounds):
                    for where in ("local", "s3"):
                        name = f"g-{T}-{r}-{uuid.uuid4().hex[:6]}.zarr"
                        url, so = (os.path.join(base, name), None) if where == "local" else (f"s3://bench/{name}", opts)
                        t = time.perf_counter()
                        build_gram(arch(), X, url, get="ntk", tile=T, client=client, storage_options=so)
                        times[where]["build"].append(time.perf_counter() - t)
                        with StoredGram(url, "ntk", client=client, storage_options=so) as op:
                            t = time.perf_counter()
                            op.matvec(V)
                            times[where]["pass"].append(time.perf_counter() - t)
                        gs = GramStore.open(url, storage_options=so)
                        t = time.perf_counter()
                        gs.done_chunks("ntk")
                        times[where]["list"].append(time.perf_counter() - t)
                        if where == "local":
                            shutil.rmtree(url)
                        else:
                            fs.rm(f"bench/{name}", recursive=True)
                med = {w: {k: statistics.median(v) for k, v in d.items()} for w, d in times.items()}
                req = requests(args.n, T)
                est = s3_estimate(req, 2, **model)
                row = {"tile": T, "n": args.n, "chunk_MiB": req["chunk_bytes"] / 2**20, "objects": req["objects"],
                       "store_MiB": req["bytes"] / 2**20, "median_s": med, "rounds": times,
                       "ratio_s3_over_local": {k: med["s3"][k] / med["local"][k] for k in ("build", "pass", "list")},
                       "real_s3_estimate": {
                           "build_s": med["local"]["build"] + est["build_io_s"],
                           "pass_s": med["local"]["pass"] + est["pass_io_s"],
                           "list_s": est["list_s"], "latency_share": est["latency_share"]}}
                rows.append(row)
                print(f"T={T:5d} ({row['chunk_MiB']:6.2f} MiB/chunk, {req['objects']:4d} objects) "
                      f"build local {med['local']['build']:6.2f} s  s3 {med['s3']['build']:6.2f} s "
                      f"(x{row['ratio_s3_over_local']['build']:.2f}) | pass local {med['local']['pass']:6.3f} s  "
                      f"s3 {med['s3']['pass']:6.3f} s (x{row['ratio_s3_over_local']['pass']:.2f}) | list local "
                      f"{med['local']['list'] * 1e3:6.1f} ms  s3 {med['s3']['list'] * 1e3:6.1f} ms | real S3 est.: "
                      f"build {row['real_s3_estimate']['build_s']:6.2f} s pass {row['real_s3_estimate']['pass_s']:6.2f}"
                      f" s, latency {100 * est['latency_share']:.0f}% of a GET", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        proc.terminate()
        proc.wait(timeout=10)
    out = {"machine": f"{os.cpu_count()} cores", "n": args.n, "d": args.d, "dtype": "float32", "kind": "ntk",
           "workers": "LocalCluster, 2 single-threaded worker processes",
           "s3": "moto server on 127.0.0.1 (no network: per-request CPU cost only)",
           "model": {"latency_ms": args.latency_ms, "stream_MBps": args.stream_mbps, "list_page_ms": args.list_ms,
                     "streams": 2, "formula": "local time + (objects * latency + bytes / stream bandwidth) / streams"},
           "results": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
