"""The bad-input campaign's tally: cases run and distinct outcomes, printed after the tests
(and written as JSON to $NTKSCALE_CAMPAIGN_REPORT when set)."""

from __future__ import annotations

import collections
import json
import os
import time

TALLY: collections.Counter = collections.Counter()
START = [0.0]


def pytest_sessionstart(session):
    START[0] = time.perf_counter()


def pytest_terminal_summary(terminalreporter):
    if not TALLY:
        return
    cases = sum(TALLY.values())
    errors = {k: v for k, v in TALLY.items() if k != "ok"}
    tr = terminalreporter
    tr.section("bad-input campaign")
    tr.write_line(f"{cases} cases: {TALLY.get('ok', 0)} results, {cases - TALLY.get('ok', 0)} errors, "
                  f"{len(errors)} distinct error messages ({time.perf_counter() - START[0]:.0f} s session)")
    for kind, count in sorted(errors.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{count:5d}  {kind}")
    path = os.environ.get("NTKSCALE_CAMPAIGN_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"cases": cases, "results": TALLY.get("ok", 0), "errors": errors}, f, indent=2)
