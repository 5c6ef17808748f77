"""A sweep's DataFrame is built at once, not column by column: its float columns share one block, so
adding a column to it (what a notebook does next) raises no pandas PerformanceWarning, whether the
sweep ran in one chunk or several, with constraints or not."""

import warnings

import numpy as np
import pandas as pd
import pytest

import perfsim
from perfsim.explore.chunks import frame

SERVING = dict(model="llama2-70b", hardware="h100-sxm", tp=[2, 4, 8], num_devices=[8, 16, 32],
               batch=[8, 32, 128, 512], prompt_len=1024, gen_len=256)


def _numpy_blocks(df: pd.DataFrame) -> int:
    """Blocks of NumPy columns (pandas warns past 100): one per column of a frame built column by column."""
    return sum(not block.is_extension for block in df._mgr.blocks)


@pytest.mark.parametrize("options", [
    {},
    {"chunk_rows": 7},
    {"constraints": "tpot_s < 0.05 and memory_per_device_gib.total <= memory_per_device_gib.capacity"},
    {"constraints": "tpot_s < 0.05", "keep_infeasible": True, "chunk_rows": 5},
])
def test_adding_a_column_to_a_sweep_does_not_warn(options):
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        df = perfsim.sweep(**SERVING, **options)
        df["requests_per_s"] = df.throughput_tokens_per_s / 256
        df["x"] = 1.0
    assert df._mgr.nblocks < 100 and _numpy_blocks(df) < 30
    whole = perfsim.sweep(**SERVING)
    if not options.get("constraints"):
        pd.testing.assert_frame_equal(df.drop(columns=["requests_per_s", "x"]), whole)


def test_chunked_sweep_equals_one_chunk_and_keeps_the_column_order():
    one = perfsim.sweep(**SERVING, chunk_rows=10**6)
    many = perfsim.sweep(**SERVING, chunk_rows=4)
    pd.testing.assert_frame_equal(one, many)
    assert list(one.columns[:5]) == ["model", "hardware", "tp", "num_devices", "batch"]


def test_chunks_of_different_result_keys_join_without_fragmenting():
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", num_devices=8, mode=["train", "inference"],
                           tp=[1, 2], chunk_rows=2)
        df["y"] = 0.0
    assert set(df["mode"]) == {"train", "inference"}
    assert df.loc[df["mode"] == "train", "step_time_s"].notna().all()
    assert df.loc[df["mode"] == "inference", "step_time_s"].isna().all()


def test_frame_keeps_order_and_values():
    cols = {"a": np.arange(3.0), "b": np.array([1, 2, 3]), "c": pd.Categorical(["x", "y", "x"]),
            "d": np.array([0.5, 1.5, 2.5]), "e": np.array([True, False, True])}
    expected = pd.DataFrame(dict(cols))
    df = frame(cols)
    pd.testing.assert_frame_equal(df, expected)
    assert not cols  # the arrays were moved into the frame


@pytest.mark.parametrize("rows", [["gpu"] * 5, [None] * 4, ["gpu", None, "gpu"], ["a", "b", "a"], ["x"], [None, "z"],
                                  ["é ≥", "é ≥"]])
def test_text_columns_hold_each_row_s_text(rows):
    """A column of one text on every row (or none) is repeated rather than read row by row: the same
    column as reading every row, which other columns still take."""
    import pyarrow as pa

    from perfsim.explore.chunks import text_column
    from perfsim.explore.plan_columns import TEXT

    value = np.asarray(rows, dtype=object)
    column = text_column(value)
    assert column.dtype == TEXT and len(column) == len(rows)
    assert [None if pd.isna(x) else x for x in column] == rows
    pd.testing.assert_extension_array_equal(column, pd.array(pa.array(value, type=pa.large_string()), dtype=TEXT))
