"""Numbers a hardware spec takes from another zoo part: ``{same_as: NAME, source: why}``.

A part without a measurement of its own often assumes another part's figure (the same die, the
closest memory with a published streaming test). Written as a reference, the figure has one home:
the other part's value at the same key, whatever that part later fits or measures, instead of a
copy that can fall behind it.
"""

from __future__ import annotations

from perfsim.errors import InputError, unknown
from perfsim.specs.paths import zoo
from perfsim.specs.yamlio import LineDict, load_yaml

#: how many parts a chain of references may pass through (deeper is taken for a cycle)
_DEPTH = 8


def resolve(data, path: str, lay_base, depth: int = 0):
    """``data`` (a hardware file's YAML, its ``base:`` laid under it by ``lay_base(data, path)``) with each
    ``{same_as: NAME, source: ...}`` number replaced by ``{value, source}``: NAME's number at the same key (where
    NAME takes that number from a third part, that part's), under this file's source."""

    def walk(node, keys):
        out = LineDict(file=getattr(node, "file", path), line=getattr(node, "line", None))
        out.lines.update(getattr(node, "lines", {}))
        for key, value in node.items():
            if isinstance(value, dict) and "same_as" in value:
                value = _take(value, (*keys, key), node, key, path, lay_base, depth)
            elif isinstance(value, dict):
                value = walk(value, (*keys, key))
            out[key] = value
        return out

    return walk(data, ()) if isinstance(data, dict) else data


def referenced(ref: dict, field: str, where: dict, names, kind: str) -> str:
    """The name a ``{same_as: NAME, source: why}`` reference at ``field`` gives, checked: no other key
    beside it, and NAME one of ``names`` (close matches named where it is not)."""
    extra = set(ref) - {"same_as", "source"}
    if extra:
        raise InputError(f"unknown key {sorted(extra)[0]!r} beside same_as", field=field, **where)
    name = ref["same_as"]
    if not isinstance(name, str) or name not in names:
        raise unknown(kind, name, names, field=f"{field}.same_as", **where)
    return name


def taken(ref: dict, value) -> dict:
    """The figure a reference resolves to: the other spec's ``value`` under the reference's own source."""
    return {"value": value, **({"source": ref["source"]} if "source" in ref else {})}


def _take(ref, keys, parent, key, path, lay_base, depth):
    field = ".".join(keys)
    where = parent.where(key) if hasattr(parent, "where") else {"file": path}
    names = zoo("hardware_specs")
    name = referenced(ref, field, where, names, "hardware part")
    if depth >= _DEPTH:
        raise InputError(f"`same_as` chain longer than {_DEPTH} parts (a cycle?)", field=field, **where)
    other = str(names[name])
    node = parent = lay_base(load_yaml(other, "hardware"), other)
    for k in keys:
        parent, node = node, node.get(k) if isinstance(node, dict) else None
    if isinstance(node, dict) and "same_as" in node:  # that part takes it from a third: followed, key by key
        node = _take(node, keys, parent, keys[-1], other, lay_base, depth + 1)
    if isinstance(node, dict):
        node = node.get("value")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise InputError(f"{name} gives no number at {field} to take", field=f"{field}.same_as", **where)
    return taken(ref, node)
