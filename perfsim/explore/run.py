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
    frame,
    run_chunks,
)
from perfsim.plan.grid import MAX_ROWS, byte_size
from perfsim.plan.grid import space as make_space

#: rows of a chunk of an in-memory sweep on this process
LOCAL_CHUNK_ROWS = 1 << 17
SWEEP_BYTES_PER_ROW = 1500  # peak memory of an in-memory sweep per row: its results (~900 B) and their making


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
    if chunk_rows is None:  # locally, pieces small enough that only one is ever held twice (see _concat)
        chunk_rows = min(space.n, LOCAL_CHUNK_ROWS) if backend == "local" else max(1, min(1 << 18, -(-space.n // 8)))
    bounds = chunk_bounds(space.n, check_chunk_rows(chunk_rows))
    bar = Progress(space.n, enabled=progress)
    frames = {}
    try:
        for k, df in run_chunks(space, bounds, range(len(bounds)), parsed, keep_infeasible, backend, scheduler):
            frames[k] = df
            bar.advance(bounds[k][1] - bounds[k][0])
    finally:
        bar.close()
    return _concat([frames.pop(k) for k in range(len(bounds))])


def _concat(frames: list) -> pd.DataFrame:
    """The chunks' rows as one frame (``frames`` is emptied), its float columns in one block as in
    each chunk (:func:`perfsim.explore.chunks.frame`): each chunk's floats are copied into the
    block and the chunk released, so the results are held about once, not twice as a plain
    ``pd.concat`` holds them. Chunks of different columns (a split of the design space where the
    result keys differ) are joined by ``pd.concat``."""
    if len(frames) == 1:
        return frames.pop()
    dtypes = frames[0].dtypes
    if any(not f.dtypes.equals(dtypes) for f in frames[1:]):
        joined = pd.concat(frames, ignore_index=True)
        frames.clear()
        return frame({name: column.to_numpy() if isinstance(column.dtype, np.dtype) else column.array
                      for name, column in joined.items()})
    floats = [name for name, dtype in dtypes.items() if dtype == np.float64]
    rows = sum(len(f) for f in frames)
    block = np.empty((len(floats), rows))
    others: dict = {name: [] for name in dtypes.index if name not in set(floats)}
    start = 0
    while frames:
        chunk = frames.pop(0)
        for i, name in enumerate(floats):  # column by column: views of the chunk's block, no copy of it
            block[i, start:start + len(chunk)] = chunk[name].to_numpy()
        for name in others:
            others[name].append(chunk[name].array)
        start += len(chunk)
        del chunk
    df = pd.DataFrame(block.T, columns=floats, copy=False)
    for loc, name in enumerate(dtypes.index):
        if name in others:
            parts = others.pop(name)
            df.insert(loc, name, parts[0]._concat_same_type(parts) if hasattr(parts[0], "_concat_same_type")
                      else np.concatenate(parts))
    return df
