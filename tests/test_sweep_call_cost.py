"""The shortcuts of a sweep's per-call work give what the general NumPy and pandas calls give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import perfsim
from perfsim.analytical.evaluate import _rows
from perfsim.explore import plan_columns, run


@pytest.mark.parametrize("codes", [np.array([0, 1, -1, 1], dtype=np.int8), np.array([2, 0, 0], dtype=np.int64),
                                   np.zeros(0, dtype=np.int8)])
def test_categorical_is_pandas_categorical_of_codes(codes):
    categories = ["a", "b", "c"]
    made = plan_columns.categorical(codes, categories)
    expected = pd.Categorical.from_codes(codes, categories=categories)
    pd.testing.assert_extension_array_equal(made, expected)
    assert made.codes.dtype == expected.codes.dtype


@pytest.mark.skipif(plan_columns.TEXT is object, reason="pandas without its text dtype")
@pytest.mark.parametrize("texts", [["gpu", "gpu", "gpu"], ["a", None, "b"], [None, None], []])
def test_text_array_is_pandas_array_of_the_texts(texts):
    import pyarrow as pa

    given = pa.array(texts, type=pa.large_string())
    made = plan_columns.text_array(given)
    expected = pd.array(given, dtype=plan_columns.TEXT)
    pd.testing.assert_extension_array_equal(made, expected)
    assert made.dtype == expected.dtype and type(made) is type(expected)
    assert made.isna().tolist() == [t is None for t in texts]


def test_spread_repeats_one_entry_as_np_full():
    for table in (np.array([3], dtype=np.int8), np.array([-0.0, 1.0]), np.array([np.nan]), np.array([True])):
        spread = plan_columns._spread(table, None, 4)
        full = np.full(4, table[0], dtype=table.dtype)
        assert spread.dtype == full.dtype and spread.tobytes() == full.tobytes() and spread.flags.writeable
    assert plan_columns._spread(np.array([1.0, 2.0]), np.array([1, 0, 1]), 3).tolist() == [2.0, 1.0, 2.0]


@pytest.mark.parametrize("value", [np.array(2.5), np.arange(3.0).reshape(1, 3), np.arange(6.0).reshape(2, 3),
                                   np.array([[True], [False]]), np.array([-0.0, np.nan, 1.0])])
def test_rows_lays_out_the_broadcast(value):
    shape = (2, 3)
    rows = _rows(value, shape)
    expected = np.broadcast_to(value, shape).reshape(-1)
    assert rows.dtype == expected.dtype and rows.shape == (6,) and rows.tobytes() == expected.tobytes()
    if value.ndim < 2:  # a block of one dimension: the broadcast as a view
        assert _rows(value, (3,)).tobytes() == np.broadcast_to(value, (3,)).tobytes()


def test_column_labels_are_made_once_and_each_frames_own():
    first = perfsim.sweep(model="llama2-7b", hardware="h100-sxm", batch=[1, 2])
    second = perfsim.sweep(model="llama2-7b", hardware="h100-sxm", batch=[1, 2])
    pd.testing.assert_index_equal(first.columns, pd.Index(list(first.columns)), exact=True)
    first.columns.name = "results"  # a name given to one frame's labels is not the other's
    assert second.columns.name is None
    assert run.column_index(list(second.columns)).name is None
