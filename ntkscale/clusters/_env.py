"""Environment overrides for the ``[cluster]`` section of a job file.

``NTKSCALE_CLUSTER_<KEY>`` sets a top-level key (``NTKSCALE_CLUSTER_WORKERS=8``) and
``NTKSCALE_CLUSTER_<SUB>_<KEY>`` a key of a sub-table (``NTKSCALE_CLUSTER_SLURM_QUEUE=gpu``).
Values are read as TOML values where they parse as one (``8``, ``1.5``, ``true``,
``"quoted"``, ``["a", "b"]``, ``{requests = {cpu = "2"}}``) and are kept as the raw
string otherwise (``4GiB``, ``tcp://host:8786``, ``01:00:00``), so shells need no quoting
for the common cases. A key whose schema type is a string always gets the raw string
(``NTKSCALE_CLUSTER_SLURM_ACCOUNT=12345`` is the account ``"12345"``, not an integer).
"""

from __future__ import annotations

import math
import tomllib
from typing import Any, Mapping

from .._config import ConfigError

__all__ = ["ENV_PREFIX", "apply_env_overrides", "parse_env_value"]

ENV_PREFIX = "NTKSCALE_CLUSTER_"


def parse_env_value(raw: str, want_str: bool = False) -> Any:
    """The value of an environment variable as TOML would read it (else the raw string).

    Parameters
    ----------
    raw : str
        The variable's text.
    want_str : bool
        The target key is string-typed: strip one level of TOML quoting if present and
        otherwise keep ``raw`` as is.
    """
    try:
        v = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    if want_str:
        return v if isinstance(v, str) else raw
    if isinstance(v, float) and not math.isfinite(v):  # "inf"/"nan" are names, not numbers
        return raw
    if isinstance(v, (bool, int, float, str, list, dict)):
        return v
    return raw  # TOML dates and times ("01:00:00" is a walltime, not a datetime.time)


def apply_env_overrides(table: Mapping[str, Any], schema: Mapping[str, Any],
                        environ: Mapping[str, str], path: str = "cluster"
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge ``NTKSCALE_CLUSTER_*`` variables into a copy of the ``[cluster]`` table.

    Parameters
    ----------
    table : mapping
        The ``[cluster]`` table from the job file.
    schema : mapping
        ``{key: type}`` for top-level keys, and ``{sub: {key: type}}`` for sub-tables
        (``type`` is a type or a tuple of types; ``str`` targets keep the raw string).
    environ : mapping
        Usually ``os.environ``.
    path : str
        The table's dotted name, for messages and the returned record.

    Returns
    -------
    merged : dict
        The table with overrides applied (sub-tables copied, never mutated in place).
    origin : dict
        ``{dotted key: environment variable}`` for every key set from the environment.

    Raises
    ------
    ConfigError
        A variable names no known key (the message lists the allowed names).
    """
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in table.items()}
    origin: dict[str, str] = {}
    subs = {k for k, t in schema.items() if isinstance(t, Mapping)}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == ENV_PREFIX:
            continue
        rest = var[len(ENV_PREFIX):].lower()
        sub = next((s for s in sorted(subs, key=len, reverse=True) if rest.startswith(s + "_")), None)
        target_schema = schema[sub] if sub else schema
        key = rest[len(sub) + 1:] if sub else rest
        if key not in target_schema or (sub is None and key in subs):
            allowed = [f"{ENV_PREFIX}{k.upper()}" for k in schema if k not in subs]
            allowed += [f"{ENV_PREFIX}{s.upper()}_<KEY>" for s in sorted(subs)]
            where = f"[{path}.{sub}]" if sub else f"[{path}]"
            raise ConfigError(f"environment variable {var} names no key of {where}; allowed: "
                              + ", ".join(allowed) + (f" with <KEY> one of {', '.join(k.upper() for k in target_schema)}"
                                                      if sub else ""))
        types = target_schema[key]
        want_str = types is str or types == (str,)
        value = parse_env_value(environ[var], want_str=want_str)
        if sub:
            cur = merged.get(sub, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"'{path}.{sub}' must be a table to take {var}, got {type(cur).__name__}")
            cur = dict(cur)
            cur[key] = value
            merged[sub] = cur
            origin[f"{path}.{sub}.{key}"] = var
        else:
            merged[key] = value
            origin[f"{path}.{key}"] = var
    return merged, origin
