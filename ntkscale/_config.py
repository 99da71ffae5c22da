"""Small helpers for validating job-config sections (TOML tables as dicts).

Every error names the full key (``cluster.slurm.walltime``), what was found and what is
allowed, so a user can fix the job file without reading the code.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

__all__ = ["ConfigError", "check_keys", "get", "section"]

_MISSING = object()


class ConfigError(ValueError):
    """A job-config value is missing, of the wrong type or out of range; the message names the key."""


def _name(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tname(types: Any) -> str:
    if not isinstance(types, tuple):
        types = (types,)
    names = {bool: "true/false", int: "integer", float: "number", str: "string",
             list: "array", dict: "table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Raise :class:`ConfigError` for keys of ``table`` not in ``allowed`` (typos are errors)."""
    allowed = list(allowed)
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        import difflib

        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, allowed, n=1)
            hints.append(f"'{_name(path, k)}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                          f"allowed in [{path or 'top level'}]: {', '.join(sorted(allowed))}")


def get(table: Mapping[str, Any], key: str, types: Any, default: Any = _MISSING, *, path: str = "",
        choices: Optional[Sequence[Any]] = None, min: Optional[float] = None,
        max: Optional[float] = None, min_exclusive: bool = False) -> Any:
    """Typed lookup of ``table[key]`` with a default, choices and numeric bounds.

    ``int`` is accepted where ``float`` is allowed; ``bool`` is never taken for a number.
    """
    full = _name(path, key)
    if key not in table:
        if default is _MISSING:
            raise ConfigError(f"missing required key '{full}' ({_tname(types)})")
        return default
    v = table[key]
    tt = types if isinstance(types, tuple) else (types,)
    if float in tt and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    ok = isinstance(v, tt) and not (isinstance(v, bool) and bool not in tt)
    if not ok:
        raise ConfigError(f"'{full}' must be {_tname(types)}, got {type(v).__name__} {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"'{full}' = {v!r} is not allowed; choose one of: "
                          + ", ".join(repr(c) for c in choices))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if min is not None and (v <= min if min_exclusive else v < min):
            raise ConfigError(f"'{full}' = {v!r} must be {'>' if min_exclusive else '>='} {min}")
        if max is not None and v > max:
            raise ConfigError(f"'{full}' = {v!r} must be <= {max}")
    return v


def section(table: Mapping[str, Any], key: str, path: str = "") -> dict[str, Any]:
    """The sub-table ``table[key]`` (empty dict when absent); an error when it is not a table."""
    v = table.get(key, {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"'{_name(path, key)}' must be a table ([{_name(path, key)}]), "
                          f"got {type(v).__name__}")
    return dict(v)
