"""Jobs: a TOML file describing a whole analysis, its stages and its run directory.

``load_job`` validates the file; ``run_job`` runs it end to end (data → Gram store → fit →
predictions → spectrum → learning curve → dynamics → export) and writes metrics, figures and a
report. The stages are one list: :mod:`ntkscale.job.registry`.
"""

from .config import JobConfig, load_job, parse_job
from .run import run_job, run_stages

__all__ = ["JobConfig", "load_job", "parse_job", "run_job", "run_stages"]
