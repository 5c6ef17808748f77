"""A sweep's frame laid out from its blocks at once is the frame inserting its columns one by one builds."""

from __future__ import annotations

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
