"""Run N generated bad-input cases (tests/campaign/bad_input.py) and write a JSON table of
outcome kinds and counts, and every problem found (issue 24).

    python benchmarks/bad_input_campaign.py --cases 2000 --out campaign.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time

import os
import sys

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "campaign"))
from bad_input import cases, error_kind, judge, run_case  # noqa: E402  (the campaign's case generator)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--out", default="bad_input_campaign.json")
    args = ap.parse_args()
    tally: collections.Counter = collections.Counter()
    problems: list = []
    t0 = time.perf_counter()

    @settings(max_examples=args.cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def one(case):
        with tempfile.TemporaryDirectory(prefix="ntkscale-campaign-") as root:
            o = run_case(case, root)
        tally[error_kind(o)] += 1
        for p in judge(o, case):
            problems.append({"problem": p, "data_fault": case.data_fault, "job_faults": case.job_faults})

    one()
    table = {"cases": sum(tally.values()), "results": tally.get("ok", 0), "seconds": round(time.perf_counter() - t0, 1),
             "distinct_errors": len(tally) - ("ok" in tally),
             "errors": dict(sorted(((k, v) for k, v in tally.items() if k != "ok"), key=lambda kv: -kv[1])),
             "problems": problems}
    with open(args.out, "w") as f:
        json.dump(table, f, indent=2)
    print(f"{table['cases']} cases, {table['results']} results, {table['distinct_errors']} distinct errors, "
          f"{len(problems)} problems, {table['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
