"""The grids the serving simulator's cost tables are tabulated on, and where a number falls on one.

Token counts are tabulated one by one up to ``_INTEGER_UP_TO`` (the tile and wave quantisation steps
of the GEMMs show there) and on a geometric grid above; contexts on an even grid of some 256 points.
:class:`Axis` gives the cell and weight of linear interpolation at a number (inside the simulation
loop: bisection on a list, or the cell's bounds kept) or at arrays (after the run).
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

_INTEGER_UP_TO = 16384  # token counts tabulated one by one up to here (tile and wave quantisation steps)
_GROWTH = 1.005  # then a geometric grid


def token_grid(top, integer_up_to=_INTEGER_UP_TO, growth=_GROWTH):
    """Token counts from 0 to at least ``top``: each one up to ``integer_up_to``, then a geometric grid."""
    top = max(math.ceil(top), 2)
    head = np.arange(0, min(top, integer_up_to) + 1, dtype=float)
    if top <= integer_up_to:
        return head
    steps = math.ceil(math.log(top / integer_up_to) / math.log(growth))
    tail = np.unique(np.ceil(integer_up_to * growth ** np.arange(1, steps + 1)))
    return np.concatenate([head, tail[tail > integer_up_to]])


def context_grid(top, points=256):
    """Contexts from 0 past ``top`` on an even grid of some ``points`` steps (a step of at least one token)."""
    step = max(1.0, math.ceil(top / points))
    return np.arange(0.0, top + 2.0 * step, step)


class Axis:
    """A sorted grid: ``(index, weight)`` of linear interpolation at ``x``, a number (bisection on a
    list: the simulation loop) or an array (after the run)."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)
        self.list = self.values.tolist()
        self.size = len(self.list)
        self.last = self.size - 2
        # the grid's integer head: x_j = j for every j up to ``unit`` (a number below it is in cell int(x))
        exact = self.values[:self.size] == np.arange(self.size)
        self.unit = int(np.argmin(exact)) - 1 if not exact.all() else self.size - 1
        self._cells = None  # (:meth:`cell`)

    def locate(self, x):
        if isinstance(x, np.ndarray):
            xs = self.values
            if x.size and 0 <= np.min(x) and np.max(x) < self.unit:  # (all in the integer head)
                j = x.astype(np.intp)
            else:
                j = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, self.last)
        else:
            xs = self.list
            if 0 <= x < self.unit:
                j = int(x)
            else:
                j = bisect_right(xs, x) - 1
                if j > self.last:
                    j = self.last
                elif j < 0:
                    j = 0
        return j, (x - xs[j]) / (xs[j + 1] - xs[j])

    def cell(self, x):
        """The cell of :meth:`locate` at a number ``x``: ``(j, lo, hi, x_j, x_{j+1} - x_j)``; every
        number from ``lo`` up to (not including) ``hi`` has the same ``j``, and its weight is
        ``(x - x_j) / (x_{j+1} - x_j)`` (each cell made once, when first asked for)."""
        if self._cells is None:
            xs, last = self.list, self.last
            self._cells = [(j, xs[j] if j > 0 else -math.inf, xs[j + 1] if j < last else math.inf, xs[j],
                            xs[j + 1] - xs[j]) for j in range(last + 1)]
        j = bisect_right(self.list, x) - 1
        return self._cells[j if 0 <= j <= self.last else (0 if j < 0 else self.last)]
