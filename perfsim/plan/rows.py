"""Reading one configuration out of the result arrays: the numbers a message carries, the plain values
of a one-row result."""

from __future__ import annotations

import functools
import math

import numpy as np

#: the classes of one truth value or number, whose truth Python reads without a NumPy call
_ONE = (bool, np.bool_, float, int, np.float64)


def any_row(mask) -> bool:
    """Whether ``mask`` holds on some row: ``np.any(mask)``, with the truth of one value (a Python or
    NumPy bool or number, as a single configuration's comparisons give) read without a NumPy call
    (``np.any`` of a NumPy scalar takes a microsecond or more; the cost models ask it many times).

    >>> any_row(np.array([0.0, 2.0]) > 1), any_row(np.float64(2.0) > 3), any_row(np.array(1.0) > 0)
    (True, False, True)
    """
    if mask.__class__ is np.ndarray:
        return bool(mask.any())
    if mask.__class__ in _ONE:
        return bool(mask)
    return bool(np.any(mask))


#: the classes of a truth value and of a number that :func:`where_one` picks between without NumPy
_TRUTHS = (bool, np.bool_)
_FLOATS = (float, np.float64)


def where_one(condition, a, b):
    """``np.where(condition, a, b)``; where each is one value (a Python or NumPy bool, and Python or NumPy
    floats, as one configuration's columns give them), the one it picks as a NumPy float without a
    NumPy call (the same value; ``np.where`` of numbers takes over a microsecond).

    >>> where_one(np.float64(2.0) > 1, 3.0, np.float64(4.0)), where_one(np.array([True, False]), 1.0, 0.0)
    (np.float64(3.0), array([1., 0.]))
    """
    if condition.__class__ in _TRUTHS and a.__class__ in _FLOATS and b.__class__ in _FLOATS:
        return np.float64(a if condition else b)
    return np.where(condition, a, b)


def maximum(a, b):
    """``np.maximum(a, b)``; of two numbers (Python or NumPy floats) the one it gives, as a NumPy float,
    without a NumPy call (NumPy's rule: ``a`` where it is NaN or above ``b``, else ``b``: NaN, ties
    between 0 and -0 and the number's class as NumPy gives them; ``np.maximum`` of two numbers takes
    most of a microsecond).

    >>> maximum(np.float64(2.0), 3.0), maximum(-0.0, 0.0), maximum(np.nan, 1.0), maximum(np.array([1.0, 4.0]), 2.0)
    (np.float64(3.0), np.float64(0.0), np.float64(nan), array([2., 4.]))
    """
    if a.__class__ in _FLOATS and b.__class__ in _FLOATS:
        return np.float64(a if a != a or a > b else b)
    return np.maximum(a, b)


def minimum(a, b):
    """``np.minimum(a, b)``, as :func:`maximum` (``a`` where it is NaN or below ``b``, else ``b``).

    >>> minimum(np.float64(2.0), 3.0), minimum(0.0, -0.0), minimum(1.0, np.nan), minimum(np.array([1.0, 4.0]), 2.0)
    (np.float64(2.0), np.float64(-0.0), np.float64(nan), array([1., 2.]))
    """
    if a.__class__ in _FLOATS and b.__class__ in _FLOATS:
        return np.float64(a if a != a or a < b else b)
    return np.minimum(a, b)


def zeros(*values):
    """Zeros of the shape ``values`` broadcast to: ``np.zeros(np.broadcast(*values).shape)``, or a NumPy
    zero where each value is a number (not an array of no dimension, on which every operation after it
    would take an array's cost).

    >>> zeros(np.float64(2.0), 3.0), zeros(np.ones(2), 1.0)
    (np.float64(0.0), array([0., 0.]))
    """
    for value in values:
        if value.__class__ not in _FLOATS and value.__class__ is not int:
            return np.zeros(np.broadcast(*values).shape)
    return np.float64(0.0)


#: the classes :func:`numeric` hands back as they are: NumPy numbers and arrays
_NUMPY = (np.float64, np.bool_, np.ndarray)
_FLOAT = np.dtype(float)


def numeric(value):
    """``np.asarray(value)``, except that a NumPy number (one configuration's column) is handed back as it
    is: the comparisons and arithmetic that follow give the same values and result classes (NumPy's
    operations on an array of no dimension give numbers), without an array's cost on each of them.

    >>> numeric(np.float64(2.0)) > 1, numeric([1.0, 3.0]) > 2
    (np.True_, array([False,  True]))
    """
    return value if value.__class__ in _NUMPY else np.asarray(value)


def floats(value):
    """``np.asarray(value, dtype=float)``, except that a NumPy float or an array of floats is handed back
    as it is (as :func:`numeric`).

    >>> floats(np.float64(2.0)), floats(8)
    (np.float64(2.0), array(8.))
    """
    if value.__class__ is np.float64 or value.__class__ is np.ndarray and value.dtype is _FLOAT:
        return value
    return np.asarray(value, dtype=float)


def value_at(value, i) -> float:
    """``value`` at row ``i``: a scalar, a 1-D array indexed by a row number, or an array laid out
    as a box of the design space indexed by coordinates (a dimension of size 1 broadcasts)."""
    if type(value) is float:
        return value
    value = np.asarray(value)
    if not value.ndim:
        return float(value)
    if isinstance(i, tuple):
        shape = value.shape
        if 1 not in shape:  # one value per point of the box
            return float(value.item(i))
        if value.size == 1:  # one value for the whole box
            return float(value.item())
        return float(value.item(tuple([j if size > 1 else 0 for j, size in zip(i, shape, strict=True)])))
    return float(value[i])


def per_slice(shape: tuple, inputs, fn):
    """``fn(*inputs)`` for arrays ``inputs`` laid out over a box of a sweep (``shape``:
    :meth:`perfsim.plan.grid.Space.boxes`) where each row's results depend on that row's inputs
    alone: computed on the first slice along every axis where all of ``inputs`` repeat it bit for
    bit, then spread along those axes (the same bits as computing every row). Returns the tuple of
    ``fn``'s arrays, each of ``shape``; None where no axis repeats (compute every row)."""
    first = first_slice(shape, inputs)
    return None if first is None else spread(shape, fn(*first))


def first_slice(shape: tuple, inputs):
    """The inputs of :func:`per_slice` on the first slice along every axis where all of them repeat
    it bit for bit (each a view); None where no axis repeats. :func:`spread` takes the results back to
    ``shape``."""
    arrays = [np.asarray(x, dtype=float) for x in inputs]
    # (an input of one value repeats along every axis: only the others are read)
    bits = [x.reshape((1,) * (len(shape) - x.ndim) + x.shape).view(np.int64) for x in arrays if x.size > 1]
    part = []
    for d, size in enumerate(shape):
        part.append(slice(0, 1) if size > 1 and all(x.shape[d] == 1 or _repeats(x, d) for x in bits)
                    else slice(None))
    if all(p.stop is None for p in part):
        return None
    part = tuple(part)
    return [np.broadcast_to(x, shape)[part] for x in arrays]


def _repeats(x: np.ndarray, d: int) -> bool:
    """Whether every slice of ``x`` along axis ``d`` is its first, bit for bit; the second entry along
    the axis read first (an axis that does not repeat most often differs there)."""
    second = [0] * x.ndim
    second[d] = 1
    if x.item(tuple(second)) != x.item(0):
        return False
    return bool((x == x[(slice(None),) * d + (slice(0, 1),)]).all())


def spread(shape: tuple, results):
    """Results computed on :func:`first_slice`'s inputs, spread over ``shape`` (copies)."""
    return tuple(np.broadcast_to(r, shape).copy() for r in results)


class Detail:
    """A check's message for the rows it flags: ``text.format(*numbers)`` (or ``text(*numbers)``
    where ``text`` is a function), each number a value (scalar, rows or a box's array) read at the
    row and divided by ``per``. Called with one row (``detail(i)``, :func:`value_at`'s rows) it gives
    that row's message; :meth:`rows` gives many rows' messages, their numbers read with one NumPy
    call per value (the same messages)."""

    __slots__ = ("text", "values", "per")

    def __init__(self, text: str, *values, per: float = 1.0):
        self.text, self.values, self.per = text, values, per

    def __call__(self, i) -> str:
        return self._message([value_at(v, i) / self.per for v in self.values])

    def _message(self, numbers) -> str:
        return self.text(*numbers) if callable(self.text) else self.text.format(*numbers)

    def rows(self, rows: np.ndarray, shape: tuple) -> list[str]:
        """The messages of the rows ``rows`` (flat row numbers of a block of ``shape``)."""
        at = np.unravel_index(rows, shape)
        numbers = [(np.broadcast_to(np.asarray(v, dtype=float), shape)[at] / self.per).tolist() for v in self.values]
        message = self.text if callable(self.text) else self.text.format
        return [message(*row) for row in zip(*numbers, strict=True)]


@functools.lru_cache(maxsize=64)
def _nesting(keys: tuple) -> tuple:
    """How :func:`first_row` nests result keys: per key (``plan.*`` left out) the dicts to open
    before it (``(parent, name)``, numbered in the order they open, 0 the result itself), then the
    dict that holds its value and the value's name, so every dict gets its keys in the order the
    dotted keys come."""
    opened: dict = {(): 0}
    steps = []
    for key in keys:
        if key.startswith("plan."):
            continue
        parts = tuple(key.split("."))
        new = []
        for depth in range(1, len(parts)):
            if parts[:depth] not in opened:
                opened[parts[:depth]] = len(opened)
                new.append((opened[parts[:depth - 1]], parts[depth - 1]))
        steps.append((key, tuple(new), opened[parts[:-1]], parts[-1]))
    return tuple(steps)


def first_row(out: dict) -> dict:
    """The first row of result arrays as plain values (:func:`plain`: NaN as None), nested by their
    dotted keys; the resolved plan's ``plan.*`` columns left out."""
    result: dict = {}
    nodes = [result]
    for key, new, holder, name in _nesting(tuple(out)):
        for parent, part in new:
            node = {}
            nodes[parent][part] = node
            nodes.append(node)
        column = out[key]
        value = column.item(0) if isinstance(column, np.ndarray) else column[0]
        kind = type(value)
        if kind is float:
            value = None if value != value else value  # NaN
        elif kind not in _PLAIN:
            value = plain(value)
        nodes[holder][name] = value
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
