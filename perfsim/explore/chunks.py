"""Sweeps in chunks: rows ``[start, stop)`` of a design space → one table, on this process or on workers.

A sweep's rows are numbered in cartesian order (:class:`perfsim.plan.grid.Space`); chunk ``k`` holds
rows ``[k · chunk_rows, (k + 1) · chunk_rows)``. Each chunk is evaluated by the vectorised core on
its own (the grid is never laid out whole), so memory is bounded by the chunk, chunks can run on
other processes or machines (:mod:`perfsim.explore.dask_backend`), and a file sweep can record which
chunks are done and resume (:mod:`perfsim.explore.files`).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from perfsim.analytical.evaluate import Pieces, evaluate_rows, whole_boxes
from perfsim.errors import InputError
from perfsim.explore.constraints import Constraint, meets, parse_constraints
from perfsim.explore.plan_columns import TEXT, categorical, integers, plan_columns, text_array
from perfsim.plan.grid import Grid, Space

BACKENDS = ("local", "dask")
DEFAULT_CHUNK_ROWS = 1 << 17  # rows per chunk of a file sweep: about 100 MB of results, 0.6 GB of memory at peak


def default_chunk_rows(space: Space, rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """Rows per chunk where none are given: ``rows``, rounded down to whole boxes of the evaluation
    (:func:`~perfsim.analytical.evaluate.whole_boxes`) where the sweep has more."""
    return whole_boxes(space, rows)


def input_columns(grid: Grid, given) -> dict:
    """Input columns of a block: each given argument (what-if keys as ``hardware.KEY``).

    Numbers stay numbers; labels become categoricals whose categories are the argument's distinct
    values in the order given, the same in every chunk (so chunks concatenate and share a schema).
    """
    columns = {}
    for name in given:
        axis = grid.axes[name]
        values = [v if not isinstance(v, dict) else str(v) for v in axis.values]
        if len(values) == 1 and isinstance(values[0], (bool, int, float)):
            columns[name] = np.full(grid.n, values[0])
        elif len(values) == 1:  # one label for every row: a categorical costs no per-row objects
            columns[name] = categorical(np.zeros(grid.n, dtype=np.int8), [str(values[0])])
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            columns[name] = np.asarray(values)[axis.codes]
        else:
            labels = list(dict.fromkeys(map(str, values)))
            columns[name] = categorical(np.asarray([labels.index(str(v)) for v in values])[axis.codes], labels)
    return columns


def text_column(value: np.ndarray):
    """Text outputs (a text or None per row) in pandas' text dtype: pyarrow reads the rows' texts in
    one pass (pandas' own conversion first checks each row's type), or where every row holds the same
    text or none (a chunk's devices, most chunks' reasons) repeats it without reading each row's text;
    pandas' where pyarrow cannot."""
    if TEXT is not object:
        try:
            import pyarrow as pa

            first = value[0] if len(value) else 0
            if (first is None or type(first) is str) and (value[-1] is first or value[-1] == first) \
                    and (len(value) <= 2 or (value == first).all()):  # one text, or none, on every row
                return text_array(pa.repeat(pa.scalar(first, type=pa.large_string()), len(value)))
            return text_array(pa.array(value, type=pa.large_string(), from_pandas=True))
        except (ImportError, TypeError, ValueError):  # pragma: no cover - not texts, or no pyarrow
            pass
    return pd.array(value, dtype=TEXT)


#: outputs that count things and are defined on every row (devices, replicas)
_COUNTS = ("dp", "num_devices")


def chunk_columns(space: Space, start: int, stop: int, constraints=(), keep_infeasible: bool = False) -> dict:
    """Rows ``[start, stop)`` of ``space`` as columns (name → array): input columns, then output
    columns, then the resolved plan (:mod:`perfsim.explore.plan_columns`). A float result of a
    chunk of several boxes is left in their pieces (:class:`~perfsim.analytical.evaluate.Pieces`,
    which :func:`frame` and the in-memory table copy into place: :func:`put`).

    With ``constraints`` (parsed :class:`~perfsim.explore.constraints.Constraint` objects), rows
    that are infeasible or break a constraint are dropped, or, with ``keep_infeasible``, kept and
    flagged by a ``meets_constraints`` column.
    """
    # float results left in pieces (joined where rows are dropped, and the counts and plan codes read below)
    apart = None if constraints else (lambda key: key not in _COUNTS and not key.startswith("plan."))
    grid, out = evaluate_rows(space, start, stop, apart)
    columns = input_columns(grid, space.given())
    for key, value in out.items():  # text outputs (reason, bottleneck_device): one dtype in every chunk
        if key.startswith("plan."):
            continue  # the evaluation's codes of the plan: the resolved plan's columns follow
        if value.dtype == object:
            columns[key] = text_column(value)
        elif key in _COUNTS and np.isfinite(value).all():  # whole numbers stay whole (one on every row: made once)
            columns[key] = integers(value, False)
        else:
            columns[key] = value
    columns.update(plan_columns(grid, out))
    del out
    if constraints:
        ok = columns["feasible"] & meets(constraints, columns)
        if keep_infeasible:
            columns["meets_constraints"] = ok
        else:
            columns = {name: value[ok] for name, value in columns.items()}
    return columns


def chunk_frame(space: Space, start: int, stop: int, constraints=(), keep_infeasible: bool = False) -> pd.DataFrame:
    """Rows ``[start, stop)`` of ``space`` as a DataFrame (:func:`chunk_columns`, :func:`frame`)."""
    return frame(chunk_columns(space, start, stop, constraints, keep_infeasible))


def frame(columns: dict) -> pd.DataFrame:
    """The DataFrame of ``columns`` (emptied on the way), its float columns in one block.

    A frame that holds each array as its own block is "highly fragmented": the next column a user
    adds warns (pandas' PerformanceWarning) and row operations are slow. Here each float column is
    copied into one block and released, and the other columns (counts, flags, labels) are inserted
    in their places. An in-memory sweep of several chunks gathers them into one such block as they
    come (:class:`perfsim.explore.run._Table`).
    """
    names = list(columns)
    floats = [name for name in names if is_float(columns[name])]
    n = len(next(iter(columns.values()))) if columns else 0
    block = np.empty((len(floats), n))
    for i, name in enumerate(floats):
        put(block[i], columns.pop(name))
    df = pd.DataFrame(block.T, columns=floats, copy=False)
    for loc, name in enumerate(names):
        if name in columns:
            df.insert(loc, name, columns.pop(name))
    return df


#: the dtype of a float column (compared as an instance: ``dtype == np.float64`` first makes one of the type)
_FLOAT = np.dtype(np.float64)


def is_float(value) -> bool:
    """A float column of rows: a float array or the pieces of one (:class:`Pieces`)."""
    if value.__class__ is np.ndarray:  # (most columns: without isinstance's look at subclasses)
        return value.ndim == 1 and value.dtype == _FLOAT
    return isinstance(value, Pieces) or (isinstance(value, np.ndarray) and value.dtype == _FLOAT
                                         and value.ndim == 1)


def put(into: np.ndarray, value):
    """Copy a column (an array, :class:`Pieces` or a number for every row) into ``into``."""
    if isinstance(value, Pieces):
        value.write(into)
    else:
        into[...] = value


def chunk_bounds(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of ``n`` rows."""
    return [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]


def check_chunk_rows(chunk_rows, field: str = "chunk_rows") -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise InputError(f"expected a whole number of rows >= 1, got {chunk_rows!r}", field=field)
    return int(chunk_rows)


def check_backend(backend, field: str = "backend") -> str:
    """``backend`` checked (None: ``local``)."""
    if backend is None:
        return "local"
    if backend not in BACKENDS:
        from perfsim.errors import unknown

        raise unknown("backend", backend, BACKENDS, field=field)
    return backend


def column_names(space: Space, constraints=(), keep_infeasible: bool = False) -> list[str]:
    """The columns a sweep of ``space`` writes (from a one-row evaluation)."""
    names = list(chunk_frame(space, 0, 1).columns)
    return [*names, "meets_constraints"] if constraints and keep_infeasible else names


def check_constraints(space: Space, constraints) -> list[Constraint]:
    """Parse ``constraints`` and check their columns against the sweep's, before any work."""
    parsed = parse_constraints(constraints)
    if parsed:
        names = column_names(space)
        for c in parsed:
            c.check(names)
    return parsed


def run_chunks(space: Space, bounds, ids, constraints=(), keep_infeasible=False, backend="local", scheduler=None,
               columns: bool = False):
    """Evaluate the chunks ``ids`` of ``bounds``; yields ``(id, DataFrame)`` as each finishes
    (in order locally; in order of completion on dask workers), or locally, with ``columns``,
    ``(id, dict of columns)`` (:func:`chunk_columns`)."""
    if backend == "dask":
        from perfsim.explore.dask_backend import run_chunks_dask

        yield from run_chunks_dask(chunk_frame, space, bounds, ids, constraints, keep_infeasible, scheduler)
        return
    make = chunk_columns if columns else chunk_frame
    for k in ids:
        start, stop = bounds[k]
        yield k, make(space, start, stop, constraints, keep_infeasible)


class Progress:
    """A one-line progress report on stderr (rows done, rate, time left), at most twice a second."""

    def __init__(self, total_rows: int, enabled: bool | None = None, label: str = "sweep", stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done, self.label = total_rows, 0, label
        self.t0 = self.last = time.perf_counter()
        self.skipped = 0

    def skip(self, rows: int):
        """Rows already done by an earlier run (resumed): counted, but not in the rate."""
        self.done += rows
        self.skipped += rows

    def advance(self, rows: int):
        self.done += rows
        now = time.perf_counter()
        if self.enabled and (now - self.last > 0.5 or self.done >= self.total):
            self.last = now
            rate = (self.done - self.skipped) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            pct = 100.0 * self.done / max(self.total, 1)
            self.stream.write(f"\r{self.label}: {self.done:,}/{self.total:,} rows ({pct:5.1f} %), "
                              f"{rate:,.0f} rows/s, {left:,.0f} s left   ")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
