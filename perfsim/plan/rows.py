"""Reading one configuration out of the result arrays: the numbers a message carries, the plain values
of a one-row result."""

from __future__ import annotations

import functools
import math

import numpy as np


def value_at(value, i) -> float:
    """``value`` at row ``i``: a scalar, a 1-D array indexed by a row number, or an array laid out
    as a box of the design space indexed by coordinates (a dimension of size 1 broadcasts)."""
    if type(value) is float:
        return value
    value = np.asarray(value)
    if not value.ndim:
        return float(value)
    if isinstance(i, tuple):
        return float(value.item(tuple([j if size > 1 else 0 for j, size in zip(i, value.shape, strict=True)])))
    return float(value[i])


@functools.lru_cache(maxsize=1024)
def _parts(key: str) -> tuple:
    return tuple(key.split("."))


def first_row(out: dict) -> dict:
    """The first row of result arrays as plain values (:func:`plain`: NaN as None), nested by their
    dotted keys; the resolved plan's ``plan.*`` columns left out."""
    result: dict = {}
    for key, column in out.items():
        if key.startswith("plan."):
            continue
        parts = _parts(key)
        value = column.item(0) if isinstance(column, np.ndarray) else column[0]
        kind = type(value)
        if kind is float:
            value = None if value != value else value  # NaN
        elif kind not in _PLAIN:
            value = plain(value)
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


_PLAIN = (bool, int, str, type(None))


def plain(value):
    """``value`` as a plain Python value: numpy numbers as ``bool``, ``int`` or ``float``, NaN as None."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, np.integer):
        return int(value)
    return value
