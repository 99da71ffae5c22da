"""Bad input never ends in a library traceback or a changed file (issue 24).

Hypothesis generates job files and data files with faults (`tests/campaign/bad_input.py`);
each must end in a result or in one clear ntkscale error that names the key, section or file,
and leave every file outside the run directory as it was. The default run is ~60 s; the
``slow`` variant runs many more cases (``pytest -m slow tests/campaign``).
"""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from .bad_input import cases, error_kind, judge, run_case

from .conftest import TALLY

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(case):
    with tempfile.TemporaryDirectory(prefix="ntkscale-campaign-") as root:
        outcome = run_case(case, root)
    TALLY[error_kind(outcome)] += 1
    problems = judge(outcome, case)
    assert not problems, (problems, case.data_fault, case.job_faults, case.doc)


@settings(max_examples=600, **SETTINGS)
@given(cases())
def test_bad_input_ends_in_a_result_or_one_clear_error(case):
    _check(case)


@pytest.mark.slow
@settings(max_examples=2000, **{**SETTINGS, "derandomize": False})
@given(cases())
def test_bad_input_campaign_many_cases(case):
    _check(case)
