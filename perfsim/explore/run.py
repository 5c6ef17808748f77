"""A sweep in memory: the design space in chunks, locally or on dask, gathered into one table
(:func:`perfsim.sweep`; sweeps to files are :mod:`perfsim.explore.files`)."""

from __future__ import annotations

import pandas as pd

from perfsim.explore.chunks import (
    Progress,
    check_backend,
    check_chunk_rows,
    check_constraints,
    chunk_bounds,
    run_chunks,
)
from perfsim.plan.grid import space as make_space


def sweep_frame(chunk_rows=None, backend: str = "local", scheduler=None, constraints=None,
                keep_infeasible: bool = False, progress: bool = False, **axes) -> pd.DataFrame:
    """The rows of the cartesian product of ``axes`` as one DataFrame (arguments as :func:`perfsim.sweep`)."""
    backend = check_backend(backend)
    space = make_space(axes)
    parsed = check_constraints(space, constraints)
    if chunk_rows is None:
        chunk_rows = space.n if backend == "local" else max(1, min(1 << 18, -(-space.n // 8)))
    bounds = chunk_bounds(space.n, check_chunk_rows(chunk_rows))
    bar = Progress(space.n, enabled=progress)
    frames = {}
    try:
        for k, df in run_chunks(space, bounds, range(len(bounds)), parsed, keep_infeasible, backend, scheduler):
            frames[k] = df
            bar.advance(bounds[k][1] - bounds[k][0])
    finally:
        bar.close()
    if len(frames) == 1:
        return frames[0]
    return pd.concat([frames[k] for k in range(len(bounds))], ignore_index=True)
