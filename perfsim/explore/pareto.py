"""Pareto fronts and best rows of a sweep's table.

A row *dominates* another when it is at least as good in every objective and better in one.
:func:`pareto` keeps the rows no other row dominates: for two objectives by one sort and a running
minimum (O(n log n), Kung et al. 1975); for more, in blocks over the rows in lexicographic order,
where a row can only be dominated by rows before it, so each block is compared with the front
found so far and with itself in a few array operations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfsim.errors import InputError, close_matches

_BLOCK_CELLS = 1 << 22  # comparisons per block (rows x front x objectives) of the many-objective front


def _column(df: pd.DataFrame, name: str, field: str) -> np.ndarray:
    if name not in df.columns:
        matches = close_matches(name, list(map(str, df.columns)))
        hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
        raise InputError(f"unknown column {name!r}{hint}", field=field)
    values = df[name]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise InputError(f"column {name!r} is not numeric", field=field)
    return values.to_numpy(dtype=float)


def _names(value, field):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"expected a column name or a list of them, got {value!r}", field=field)
    return list(value)


def front_mask(points: np.ndarray) -> np.ndarray:
    """Rows of ``points`` (n x k, every objective minimised, no NaN) that no other row dominates.

    >>> front_mask(np.array([[1.0, 3.0], [2.0, 2.0], [2.0, 3.0], [3.0, 1.0], [1.0, 3.0]])).tolist()
    [True, True, False, True, True]
    """
    n, k = points.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    # identical points do not dominate each other: decide once per distinct point, in lexicographic order
    order = np.lexsort(points.T[::-1])
    ordered = points[order]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    unique = ordered[new]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    if k == 1:
        keep = np.zeros(len(unique), dtype=bool)
        keep[0] = True
    elif k == 2:
        # sorted by x0 then x1: a point is dominated iff an earlier point has x1 <= its x1
        y = unique[:, 1]
        before = np.minimum.accumulate(np.concatenate(([np.inf], y[:-1])))
        keep = before > y
    else:
        keep = _front_blocks(unique)
    return keep[inverse]


def _front_blocks(u: np.ndarray) -> np.ndarray:
    """Non-dominated rows of distinct, lexicographically sorted points (a later row never dominates
    an earlier one, so the front only grows)."""
    n, k = u.shape
    keep = np.zeros(n, dtype=bool)
    front = np.empty((0, k))
    start = 0
    while start < n:
        rows = max(1, min(n - start, _BLOCK_CELLS // ((len(front) + 1) * k), int(np.sqrt(_BLOCK_CELLS / k))))
        block = u[start:start + rows]
        # dominated by the front so far (distinct points: <= everywhere means dominated)
        alive = ~np.any(np.all(front[None, :, :] <= block[:, None, :], axis=2), axis=1) if len(front) else \
            np.ones(len(block), dtype=bool)
        cand = block[alive]
        # inside the block: row i is dominated by an earlier row j of the block
        le = np.all(cand[None, :, :] <= cand[:, None, :], axis=2)  # le[i, j]: cand[j] <= cand[i]
        le &= np.tril(np.ones((len(cand), len(cand)), dtype=bool), -1)
        ok = ~le.any(axis=1)
        idx = np.flatnonzero(alive)[ok] + start
        keep[idx] = True
        front = np.concatenate([front, cand[ok]])
        start += rows
    return keep


def _objectives(df, minimize, maximize):
    minimize, maximize = _names(minimize, "minimize"), _names(maximize, "maximize")
    if not minimize and not maximize:
        raise InputError("name at least one objective column", field="minimize")
    cols = [(_column(df, m, "minimize"), 1.0) for m in minimize] + [(_column(df, m, "maximize"), -1.0)
                                                                  for m in maximize]
    return np.column_stack([sign * values for values, sign in cols]), minimize + maximize


def _usable(df, constraints, feasible_only):
    from perfsim.explore.constraints import meets, parse_constraints

    ok = np.ones(len(df), dtype=bool)
    if feasible_only and "feasible" in df.columns:
        ok &= df["feasible"].to_numpy(dtype=bool)
    if constraints is not None:
        ok &= meets(parse_constraints(constraints), df)
    return ok


def pareto(df: pd.DataFrame, minimize=None, maximize=None, constraints=None, feasible_only: bool = True) -> pd.DataFrame:
    """The Pareto front of a sweep: rows no other row beats in every objective.

    Parameters
    ----------
    df : pandas.DataFrame
        A sweep's table (:func:`perfsim.sweep`).
    minimize, maximize : str or list of str
        Objective columns (``"tpot_s"``, ``"throughput_tokens_per_s"``, ...).
    constraints : str or list of str, optional
        Rows must meet these first (:mod:`perfsim.explore.constraints`).
    feasible_only : bool
        Leave out rows with ``feasible == False`` (and rows with a missing objective).

    Returns
    -------
    pandas.DataFrame
        The non-dominated rows (original index), sorted by the first objective.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [1.0, 2.0, 3.0, 2.5], "x": [1.0, 5.0, 6.0, 4.0]})
    >>> pareto(df, minimize="t", maximize="x").index.tolist()
    [0, 1, 2]
    """
    points, names = _objectives(df, minimize, maximize)
    ok = _usable(df, constraints, feasible_only) & ~np.isnan(points).any(axis=1)
    rows = np.flatnonzero(ok)
    mask = np.zeros(len(df), dtype=bool)
    mask[rows[front_mask(points[rows])]] = True
    first = names[0]
    return df[mask].sort_values(first, ascending=first in _names(minimize, "minimize"), kind="stable")


def parse_objective(objective: str) -> tuple[str, bool]:
    """``"max:tokens_per_s"`` → ``("tokens_per_s", False)``; ``"min:step_time_s"`` → ``(…, True)``."""
    if not isinstance(objective, str) or ":" not in objective:
        raise InputError(f"expected 'min:COLUMN' or 'max:COLUMN', got {objective!r}", field="objective")
    sense, column = objective.split(":", 1)
    if sense.strip() not in ("min", "max"):
        raise InputError(f"expected 'min:COLUMN' or 'max:COLUMN', got {objective!r}", field="objective",
                         value=sense, choices=["min", "max"])
    return column.strip(), sense.strip() == "min"


def best(df: pd.DataFrame, objective: str, constraints=None, n: int = 1, feasible_only: bool = True) -> pd.DataFrame:
    """The ``n`` best rows of a sweep for ``objective`` (``"max:tokens_per_s"``, ``"min:step_time_s"``).

    Rows that are infeasible (with ``feasible_only``), miss the objective, or break a constraint
    are left out; ties keep the sweep's order. Returns a DataFrame of at most ``n`` rows, best first.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [3.0, 1.0, 2.0], "mem": [10.0, 90.0, 20.0]})
    >>> best(df, "min:t", constraints="mem <= 80").index.tolist()
    [2]
    """
    column, minimise = parse_objective(objective)
    values = _column(df, column, "objective")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"expected a whole number >= 1, got {n!r}", field="n")
    ok = _usable(df, constraints, feasible_only) & ~np.isnan(values)
    rows = np.flatnonzero(ok)
    order = np.argsort(values[rows] if minimise else -values[rows], kind="stable")[:n]
    return df.iloc[rows[order]]
