"""Memos for work that repeats from call to call: parsed user dicts, the columns of one configuration.

A memo is keyed by :func:`frozen`, a hashable form of an argument that keeps each value's type, so
``4096`` and ``4096.0`` or ``1`` and ``True`` (equal in Python, and hashed alike) are different keys:
a value a check would refuse never finds the entry of one it accepted. A value that cannot be keyed
(an array, an object of another type) is not memoised.
"""

from __future__ import annotations

import threading
from pathlib import PurePath

_SCALARS = (str, int, float, bool, type(None), PurePath)


class Unkeyable(Exception):
    """A value :func:`frozen` does not key."""


def frozen(value):
    """A hashable, type-exact key of ``value``: nested dicts, lists and tuples of plain scalars.

    Raises :class:`Unkeyable` for anything else.

    >>> frozen({"a": [1, 2.0]}) == frozen({"a": [1, 2]})
    False
    """
    kind = type(value)
    if isinstance(value, dict):
        return ("dict", tuple((frozen(k), frozen(v)) for k, v in value.items()))
    if kind is list or kind is tuple:
        return (kind.__name__, tuple(frozen(v) for v in value))
    if kind in _SCALARS or isinstance(value, PurePath):
        return (kind, repr(value)) if kind is float else (kind, value)  # repr keeps -0.0 apart from 0.0
    raise Unkeyable(kind.__name__)


class Memo:
    """A bounded map from :func:`frozen` keys to values; the oldest entries go first when full. Safe
    to share between threads (a dask worker's): reads take no lock, changes one."""

    def __init__(self, size: int = 256):
        self.size = size
        self.entries: dict = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        return self.entries.get(key, default)

    def put(self, key, value):
        with self._lock:
            while len(self.entries) >= self.size:
                self.entries.pop(next(iter(self.entries)))
            self.entries[key] = value
        return value

    def clear(self):
        with self._lock:
            self.entries.clear()
