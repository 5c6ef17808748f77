"""A sweep's frame laid out from its blocks at once is the frame inserting its columns one by one builds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import perfsim
from perfsim.explore import run

SWEEPS = [
    dict(model=["llama2-7b", "mixtral-8x7b"], hardware="a100-80gb", mode=["train", "inference"], tp=[1, 2],
         batch=[1, 64], num_devices=[2, 4]),
    dict(model="llama2-7b", hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [2000, 4000]}, batch=[1, 8],
         offload_kv=["none", "cpu"], power_cap_w=[None, 400]),
]


@pytest.mark.parametrize("axes", SWEEPS)
@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_the_frame_is_the_same_either_way(axes, chunk_rows, monkeypatch):
    at_once = perfsim.sweep(chunk_rows=chunk_rows, **axes)
    monkeypatch.setattr(run, "_from_blocks", lambda *args: None)  # the columns inserted one by one
    inserted = perfsim.sweep(chunk_rows=chunk_rows, **axes)
    pd.testing.assert_frame_equal(at_once, inserted, check_exact=True)
    assert list(at_once.dtypes) == list(inserted.dtypes)
    assert at_once.columns.dtype == inserted.columns.dtype
    at_once.loc[0, "feasible"] = not at_once.loc[0, "feasible"]  # its arrays are its own, writable


def _chunks():
    """Three chunks of a table of 9 rows: a column of counts in every chunk, a flag column, and a column
    of counts that is nullable in the second chunk and missing in the third."""
    return [
        {"x": np.arange(3.0), "n": np.arange(3), "f": np.array([True, False, True]), "m": np.arange(3)},
        {"x": np.arange(3.0) + 3, "n": np.arange(3, 6), "f": np.zeros(3, bool),
         "m": pd.array([1, None, 3], dtype="Int64")},
        {"x": np.arange(3.0) + 6, "n": np.arange(6, 9), "f": np.ones(3, bool)},
    ]


def test_a_table_of_chunks_writes_counts_and_flags_into_a_block_per_dtype_as_they_come():
    """The counts and flags of a table of several chunks go into one block per dtype as each chunk comes
    (no array joined at the end); a column whose type changes in a later chunk, or that some chunk
    lacks, joins as pd.concat joins the chunks' columns. The frame is pd.concat's, its columns its own."""
    expected = pd.concat([pd.DataFrame(chunk) for chunk in _chunks()], ignore_index=True)
    table = run._Table(9)
    for start, chunk in zip((0, 3, 6), _chunks(), strict=True):
        table.add(chunk, start)
        assert not chunk  # each chunk's arrays released as it is added
    assert set(table.placed) == {"n", "f"}  # m taken out of its block at the second chunk
    made = table.frame()
    pd.testing.assert_frame_equal(made, expected, check_exact=True)
    assert made._mgr.nblocks == 4  # floats, the int64 block (n), the bool block (f), m
    before = made.copy()
    made.loc[0, "n"] = 99
    made.loc[1, "f"] = True
    assert ((made != before) & ~(made.isna() & before.isna())).to_numpy().sum() == 2
