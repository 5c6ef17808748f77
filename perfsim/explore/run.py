"""A sweep in memory: the design space in chunks, locally or on dask, gathered into one table
(:func:`perfsim.sweep`; sweeps to files are :mod:`perfsim.explore.files`)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from perfsim.errors import InputError, check_whole
from perfsim.explore.chunks import (
    Progress,
    check_backend,
    check_chunk_rows,
    check_constraints,
    chunk_bounds,
    default_chunk_rows,
    frame,
    is_float,
    put,
    run_chunks,
)
from perfsim.plan.grid import MAX_ROWS, byte_size
from perfsim.plan.grid import space as make_space

#: rows of a chunk of an in-memory sweep on this process
LOCAL_CHUNK_ROWS = 1 << 17
#: rows up to which a table of one chunk copies its whole-number and flag columns into a block per dtype:
#: copying 4,096 numbers takes ~1 us, about what pandas takes for a block of its own (one per column
#: otherwise); a table of several chunks copies them as its chunks arrive (they are copied to be joined)
COPY_ROWS = 4096
SWEEP_BYTES_PER_ROW = 1500  # peak memory of an in-memory sweep per row: its results (~1 kB) and their making


def physical_memory() -> int | None:
    """Bytes of memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not a POSIX system
        return None


def check_memory(rows: int) -> int:
    """Refuse an in-memory sweep whose table would not fit this machine's memory."""
    need, have = rows * SWEEP_BYTES_PER_ROW, physical_memory()
    if have and need > have:
        raise InputError(f"a sweep of {rows:,} rows needs about {byte_size(need)} of memory, more than this "
                         f"machine's {byte_size(have)}; write it to a file chunk by chunk (perfsim sweep SPEC --out "
                         "FILE, or perfsim.explore.files.write_sweep) or sweep fewer rows", field="axes")
    return rows


def sweep_frame(chunk_rows=None, backend: str = "local", scheduler=None, constraints=None,
                keep_infeasible: bool = False, progress: bool = False, max_rows=None, **axes) -> pd.DataFrame:
    """The rows of the cartesian product of ``axes`` as one DataFrame (arguments as :func:`perfsim.sweep`)."""
    backend = check_backend(backend)
    max_rows = MAX_ROWS if max_rows is None else check_whole(max_rows, "max_rows")
    space = make_space(axes, max_rows, "max_rows")
    check_memory(space.n)
    parsed = check_constraints(space, constraints)
    if chunk_rows is None:  # locally, pieces small enough that only one is ever held twice (_Table)
        chunk_rows = min(space.n, default_chunk_rows(space, LOCAL_CHUNK_ROWS)) if backend == "local" else max(1, min(1 << 18, -(-space.n // 8)))
    bounds = chunk_bounds(space.n, check_chunk_rows(chunk_rows))
    bar = Progress(space.n, enabled=progress)
    drops = bool(parsed) and not keep_infeasible  # rows dropped: the table's length is known at the end only
    table = None if drops else _Table(space.n)
    frames = {}
    try:
        for k, chunk in run_chunks(space, bounds, range(len(bounds)), parsed, keep_infeasible, backend, scheduler,
                                   columns=backend == "local"):
            if table is not None:
                table.add(chunk if isinstance(chunk, dict) else _columns(chunk), bounds[k][0])
            else:
                frames[k] = chunk if isinstance(chunk, pd.DataFrame) else frame(chunk)
            bar.advance(bounds[k][1] - bounds[k][0])
    finally:
        bar.close()
    if table is not None:
        return table.frame()
    if len(frames) == 1:
        return frames.pop(0)
    return frame(_columns(pd.concat([frames.pop(k) for k in range(len(bounds))], ignore_index=True)))


def _columns(df: pd.DataFrame) -> dict:
    """A frame's columns as arrays (NumPy where the dtype is NumPy's)."""
    return {name: column.to_numpy() if isinstance(column.dtype, np.dtype) else column.array
            for name, column in df.items()}


class _Table:
    """A sweep's rows gathered chunk by chunk into one frame whose float columns share one block.

    The block is laid out once for every row, and each chunk's float columns are copied into it as the
    chunk arrives and then released, so the results are held about once (a chunk at a time twice),
    not twice as joining whole chunk frames holds them; the frame built from it is not fragmented
    (pandas warns when a column is added to a frame of a block per column, and its row operations
    are slow). A table of several chunks, or of few rows, lays its other NumPy columns (counts,
    flags) out so too, a block per dtype (:meth:`_place`): one allocation per dtype, written as the
    chunks come, rather than each column's chunks joined at the end into an array of its own. Chunks
    whose result keys differ (a split of the design space where the modes change) join as
    ``pd.concat`` joins them: the columns of every chunk, missing values where a chunk has none.
    """

    def __init__(self, rows: int):
        self.rows = rows
        self.order: dict = {}  # every column, in order of first appearance
        self.floats: dict = {}  # float column -> its row in the block
        self.block = None
        self.extra: dict = {}  # float columns a first chunk did not have
        self.others: dict = {}  # column -> [(first row, array)]
        self.alike: list = []  # [(block of one dtype, its columns' names)]
        self.placed: dict = {}  # column -> (its block, its row there, [(first row, rows)] written)
        self.chunks: list = []  # (first row, rows) of each chunk added

    def add(self, columns: dict, start: int):
        n = len(next(iter(columns.values())))
        place = self.block is None and (n < self.rows or self.rows <= COPY_ROWS)
        if self.block is None:
            self.floats = {name: i for i, name in enumerate(k for k, v in columns.items() if is_float(v))}
            self.block = np.empty((len(self.floats), self.rows))
        self.order.update(dict.fromkeys(columns))
        self.chunks.append((start, n))
        rows = self.block[:, start:start + n]  # (one view of the chunk's rows; a column of it per float)
        for name, i in self.floats.items():
            value = columns.pop(name, None)
            if value.__class__ is np.ndarray:
                rows[i] = value
            else:
                put(rows[i], np.nan if value is None else value)
        if place:  # (the first chunk's columns other than its floats)
            self._place(columns)
        placed = self.placed
        for name, value in columns.items():
            if name in placed:
                block, i, spans = placed[name]
                if value.__class__ is np.ndarray and value.dtype == block.dtype and value.ndim == 1:
                    block[i, start:start + n] = value
                    spans.append((start, n))
                    continue
                self._eject(name)  # (another type in this chunk: its chunks joined as pd.concat joins them)
            if not is_float(value):
                self.others.setdefault(name, []).append((start, value))
            elif name in self.others:
                self.others[name].append((start, np.asarray(value)))
            else:
                if name not in self.extra:
                    self.extra[name] = np.full(self.rows, np.nan)
                put(self.extra[name][start:start + n], value)
        columns.clear()

    def _place(self, columns: dict):
        """A block per dtype of the first chunk's whole-number and flag NumPy columns (``columns``: its
        columns other than the floats), for every row."""
        alike: dict = {}
        for name, value in columns.items():
            if value.__class__ is np.ndarray and value.ndim == 1 and value.dtype.kind in "biu":
                alike.setdefault(value.dtype, []).append(name)
        for dtype, members in alike.items():
            block = np.empty((len(members), self.rows), dtype=dtype)
            self.alike.append((block, members))
            for i, name in enumerate(members):
                self.placed[name] = (block, i, [])

    def _eject(self, name: str):
        """A placed column taken out of its block: the rows written so far as parts (views of the block)."""
        block, i, spans = self.placed.pop(name)
        self.others[name] = [(first, block[i, first:first + n]) for first, n in spans]

    def frame(self) -> pd.DataFrame:
        every = len(self.chunks)  # (a column written by every chunk holds every row: the chunks cover them)
        if sum(n for _, n in self.chunks) != self.rows:  # pragma: no cover - a sweep's chunks cover its rows
            every = -1
        for name in [name for name, (_, _, spans) in self.placed.items() if len(spans) != every]:
            self._eject(name)  # (a column some chunks have not: missing values there)
        groups = []
        for block, members in self.alike:
            kept = [i for i, name in enumerate(members) if name in self.placed]
            if len(kept) == len(members):
                groups.append((block, members))
            elif kept:
                groups.append((block[kept], [members[i] for i in kept]))
        self.alike, self.placed = [], {}
        grouped = {name for _, members in groups for name in members}
        names = [name for name in self.order if name not in self.floats and name not in grouped]
        others = {name: self.extra.pop(name) if name in self.extra else self._join(self.others.pop(name))
                  for name in names}
        df = _from_blocks(self.block, list(self.floats), others, list(self.order), self.rows, groups)
        if df is None:
            for block, members in groups:
                others.update(zip(members, block, strict=True))
            df = pd.DataFrame(self.block.T, columns=list(self.floats), copy=False)
            for loc, name in enumerate(self.order):
                if name in others:
                    df.insert(loc, name, others.pop(name))
        self.block = None
        return df

    def _join(self, parts: list):
        if len(parts) == 1 and len(parts[0][1]) == self.rows:  # one chunk's column: as it is, if its own
            array = parts[0][1]
            own = not isinstance(array, np.ndarray) or (array.base is None and array.flags.writeable)
            return array if own else array.copy()
        parts.sort(key=lambda part: part[0])
        arrays = [array for _, array in parts]
        whole = sum(len(a) for a in arrays) == self.rows and len({type(a) for a in arrays}) == 1 \
            and len({str(a.dtype) for a in arrays}) == 1
        if whole:
            return np.concatenate(arrays) if isinstance(arrays[0], np.ndarray) else arrays[0]._concat_same_type(arrays)
        pieces = [pd.Series(a, index=pd.RangeIndex(s, s + len(a))) for s, a in parts]
        return pd.concat(pieces).reindex(pd.RangeIndex(self.rows)).array  # rows of chunks without it: missing


def _from_blocks(block: np.ndarray, floats: list, others: dict, order: list, rows: int, groups=()):
    """The frame of :meth:`_Table.frame` laid out at once where pandas can take its blocks as they are
    (pandas 3): the float block, the blocks of ``groups`` (``(block, names)``: a row per column) and
    one block per other column, each at its place in ``order``, the frame inserting them one by one
    would build (the same columns, dtypes and index). None where pandas cannot, or a column is not a
    plain NumPy array or a pandas extension array."""
    try:
        from pandas.api.internals import create_dataframe_from_blocks
    except ImportError:  # pandas before 3.0
        return None
    where = {name: i for i, name in enumerate(order)}
    places = np.arange(len(order), dtype=np.intp)  # (a column's placement: a view of one entry of it)
    blocks = [(block, places[[where[name] for name in floats]])]
    blocks += [(alike, places[[where[name] for name in members]]) for alike, members in groups]
    for name, value in others.items():
        i = where[name]
        if value.__class__ is np.ndarray or isinstance(value, np.ndarray):
            if value.ndim != 1 or value.dtype == object or len(value) != rows:
                return None
            blocks.append((value.reshape(1, -1), places[i:i + 1]))
        elif isinstance(value, pd.api.extensions.ExtensionArray):
            blocks.append((value, places[i:i + 1]))
        else:
            return None
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(rows), columns=column_index(order))


#: the column labels of recent sweeps, by their names: a sweep's calls and chunks name the same columns
_INDEXES: dict = {}


def column_index(names: list) -> pd.Index:
    """``pd.Index(names)``: made once per list of names (inferring the labels' type reads every name,
    ~35-75 us for a sweep's ~140 columns) and handed out as a copy (a frame's labels are its own: a
    name given to one frame's columns is not another's)."""
    key = tuple(names)
    index = _INDEXES.get(key)
    if index is None:
        if len(_INDEXES) >= 64:
            _INDEXES.clear()
        index = _INDEXES[key] = pd.Index(names)
    return index.copy()
