"""A small checker for nested YAML mappings with per-number sources.

A schema is a nested dict: each key maps to a sub-schema (dict), or to a leaf type
(``NUM``, ``INT``, ``STR``, ``BOOL``), or to ``NumMap(keys)`` (a mapping of numbers whose keys
must come from ``keys``). Every mapping may carry ``source:``; every number must be covered by the
nearest ``source`` (its own ``{value, source}`` form, or any enclosing mapping's).
"""

from __future__ import annotations

from dataclasses import dataclass

from perfsim.errors import InputError, check_whole, finite, shown
from perfsim.specs.yamlio import LineDict

NUM, INT, STR, BOOL = "number", "integer", "string", "boolean"


@dataclass(frozen=True)
class NumMap:
    """A mapping whose keys come from ``keys`` and whose values are non-negative numbers."""

    keys: tuple


def _where(mapping, key):
    return mapping.where(key) if isinstance(mapping, LineDict) else {}


def check(data, schema: dict, *, path: str = "", source=None, required=(), sources_required=True):
    """Check ``data`` against ``schema`` and return ``(values, sources)``.

    ``values`` is a flat dict ``{"device.memory.hbm.bandwidth_gb_s": 2039.0, ...}`` with
    ``{value, source}`` forms unwrapped; ``sources`` maps the same dotted keys to their source.

    Raises
    ------
    InputError
        Unknown key (with close matches), wrong type, negative, infinite or NaN number, number
        without a source, or a missing required dotted key.
    """
    values: dict = {}
    sources: dict = {}
    _walk(data, schema, path, source, values, sources, sources_required)
    for key in required:
        if key not in values:
            raise InputError("required key is missing", field=key, file=getattr(data, "file", None))
    return values, sources


def _walk(data, schema, path, source, values, sources, sources_required):
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping, got {type(data).__name__}", field=path or "<top>",
                         file=getattr(data, "file", None))
    source = data.get("source", source)
    if "source" in data and not isinstance(data["source"], str):
        raise InputError("source must be a string", field=_join(path, "source"), **_where(data, "source"))
    allowed = schema.keys if isinstance(schema, NumMap) else schema.keys()
    for key, value in data.items():
        if key == "source":
            continue
        field = _join(path, key)
        if key not in allowed:
            raise InputError(
                f"unknown key {key!r}", field=field, value=key, choices=list(allowed), **_where(data, key)
            )
        sub = NUM if isinstance(schema, NumMap) else schema[key]
        if isinstance(sub, (dict, NumMap)):
            _walk(value, sub, field, source, values, sources, sources_required)
            continue
        leaf_source = source
        if isinstance(value, dict) and sub in (NUM, INT) and "value" in value:
            extra = set(value) - {"value", "source"}
            if extra:
                raise InputError(f"unknown key {sorted(extra)[0]!r}", field=field, **_where(value, "value"))
            leaf_source = value.get("source", source)
            value = value["value"]
        _check_leaf(value, sub, field, data, key)
        if sub in (NUM, INT):
            if sources_required and not leaf_source:
                raise InputError("number has no source: add `source:` to it or to a mapping above it",
                                 field=field, **_where(data, key))
            sources[field] = leaf_source
            value = float(value) if sub == NUM else int(value)
        values[field] = value


def _check_leaf(value, kind, field, data, key):
    where = _where(data, key)
    if kind == INT:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InputError(f"must not be negative, got {shown(value)}", field=field, **where)
        check_whole(value, field, 0, **where)
    elif kind == NUM:
        if finite(value) is None:
            raise InputError(f"expected a finite number, got {shown(value)}", field=field, **where)
        if value < 0:
            raise InputError(f"must not be negative, got {shown(value)}", field=field, **where)
    elif kind == STR and not isinstance(value, str):
        raise InputError(f"expected a string, got {value!r}", field=field, **where)
    elif kind == BOOL and not isinstance(value, bool):
        raise InputError(f"expected true or false, got {value!r}", field=field, **where)


def _join(path, key):
    return f"{path}.{key}" if path else str(key)
