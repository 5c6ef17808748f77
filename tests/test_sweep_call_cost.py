"""The shortcuts of a sweep's per-call work give what the general NumPy and pandas calls give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from clock_problems import random_problems, solve_joined

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


@pytest.mark.parametrize("values", [[1, 2, 8], [None, 4], [2.0], [True, 3]])
def test_whole_values_are_kept_and_spread_into_each_chunks_own_arrays(values):
    kept, made = plan_columns._whole(values), plan_columns._whole_made(values)
    assert plan_columns._whole(values) is kept  # made once per list of values
    for a, b in ((kept, made),) if isinstance(made, np.ndarray) else ((kept._data, made._data), (kept._mask, made._mask)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    base = kept if isinstance(kept, np.ndarray) else kept._data
    before = base.copy()
    for codes in (None, np.array([0, 0, 0])):
        spread = plan_columns._spread(base, codes, 3)
        spread[:] = -7  # a chunk's column is its own
    assert base.tobytes() == before.tobytes() and not base.flags.writeable


def test_messages_of_many_rows_are_each_rows_message():
    from perfsim.plan.rows import Detail

    shape = (2, 3)
    needed = np.arange(6.0).reshape(shape) * 1.5
    for text in ("{:.1f} needed, {:g} usable", lambda a, b: f"{a:.2f}/{b}"):
        detail = Detail(text, needed, np.float64(4.0), per=2.0)
        rows = np.array([0, 4, 5])
        at = zip(*(a.tolist() for a in np.unravel_index(rows, shape)))
        assert detail.rows(rows, shape) == [detail(i) for i in at]


def test_a_box_the_cap_binds_on_everywhere_joins_the_search(monkeypatch):
    """A span the cap binds on at every row keeps its box (its repeated axes cut), another leaves the
    rows it binds on: both are searched in one bisection, each row's clock and fit those of its span
    solved alone, to the bit."""
    rng = np.random.default_rng(7)
    # the first binds everywhere, the second on some
    problems = random_problems(rng, (((4, 6, 5), (4, 6, 1), 0.3, 0.99), ((4, 6, 5), (4, 6, 5), 0.6, 1.3)))
    alone, searches, _ = solve_joined(monkeypatch, problems)
    assert searches == [(4 * 6 + (alone[1][0] < 1.0).sum(),)]
    assert (alone[0][0] < 1.0).all() and 0 < (alone[1][0] < 1.0).sum() < alone[1][0].size


def test_first_slice_cuts_the_axes_every_input_repeats_bit_for_bit():
    from perfsim.plan.rows import first_slice

    rng = np.random.default_rng(3)
    base = rng.uniform(size=(3, 1, 4))
    zeros = np.zeros((3, 5, 4))
    zeros[2, 4, 0] = -0.0  # equal to 0.0, not the same bits: axis 1 does not repeat
    nan = np.full((1, 5, 1), np.nan)
    shape = (3, 5, 4)
    cut = first_slice(shape, [np.broadcast_to(base, shape), 2.0, nan])
    assert [x.shape for x in cut] == [(3, 1, 4)] * 3  # NaN repeats as its bits do
    assert first_slice(shape, [np.broadcast_to(base, shape), zeros]) is None
    assert first_slice(shape, [rng.uniform(size=shape)]) is None
    assert [x.shape for x in first_slice(shape, [np.broadcast_to(rng.uniform(size=(1, 5, 1)), shape)])] == [(1, 5, 1)]


@pytest.mark.parametrize("labels", [("a", "b", "a"), ("x", None, "y"), (None,), ("only",)])
def test_label_codes_are_made_once_and_each_chunks_categorical_its_own(labels):
    codes = np.array([2, 0, 1, 0][:len(labels) + 1]) % len(labels)
    missing = np.zeros(len(codes), dtype=bool)
    missing[-1] = True
    made = plan_columns._categorical(list(labels), codes, len(codes), missing)
    categories = list(dict.fromkeys(x for x in labels if x is not None))
    rows = [labels[c] for c in codes]
    rows[-1] = None
    expected = pd.Categorical(rows, categories=categories)
    pd.testing.assert_extension_array_equal(made, expected)
    table, dtype = plan_columns._label_codes(labels)
    assert plan_columns._label_codes(labels)[0] is table and not table.flags.writeable  # made once, never written
    before = table.copy()
    one = plan_columns._categorical(list(labels), None, 3)  # one value on every row: a new array of codes
    assert not np.shares_memory(one.codes, table)
    assert table.tobytes() == before.tobytes() and one.dtype == dtype


def test_is_float_is_a_float_array_of_rows_or_pieces():
    from perfsim.analytical.evaluate import Pieces
    from perfsim.explore.chunks import is_float

    class Sub(np.ndarray):
        pass

    cases = [(np.zeros(3), True), (np.zeros(3).view(Sub), True), (np.zeros((2, 3)), False),
             (np.zeros(3, np.int64), False), (np.zeros(3, ">f8"), False), (np.zeros(3, np.float32), False),
             (np.float64(1.0), False), (pd.Categorical(["a"]), False), (Pieces(3, [(0, np.zeros(3))]), True)]
    for value, expected in cases:
        assert is_float(value) is expected, value


def test_default_axes_are_shared_and_given_ones_each_grids_own():
    from perfsim.plan.arguments import ARGUMENTS
    from perfsim.plan.grid import space

    one = space(dict(model="llama2-7b", hardware="h100-sxm", batch=[1, 2]))
    other = space(dict(model="llama2-7b", hardware="a100-80gb", tp=[1, 2]))
    grids = [(one, one.block()), (other, other.block()), *((one, g) for _, g in one.boxes(0, one.n, 1)),
             *((other, g) for _, g in other.boxes(0, other.n, 8))]
    shared = grids[0][1].axes["gen_len"]
    for made, grid in grids:
        given = made.given()
        assert list(grid.axes) == given + [name for name in ARGUMENTS if name not in given]  # argument order
        for name, axis in grid.axes.items():
            assert axis.name == name
            if name not in given:
                assert axis.values == [ARGUMENTS[name][1]] and axis.codes.tolist() == [0]
        assert grid.axes["gen_len"] is shared  # one default axis for every grid
    assert one.block().axes["batch"] is not one.block().axes["batch"]  # a given axis: each grid's own


def test_small_tables_lay_their_numpy_columns_out_by_dtype():
    """A table of few rows, of one chunk or several, copies its counts and flags into one block per
    dtype (as its floats); one of many rows takes them as they are. Either way the same frame, and
    each column its own."""
    axes = dict(model="llama2-7b", hardware="h100-sxm", batch=[1, 2, 4], tp=[1, 2])
    small, chunked = perfsim.sweep(**axes), perfsim.sweep(chunk_rows=4, **axes)
    old = run.COPY_ROWS
    try:
        run.COPY_ROWS = 0  # every column taken as it is: a block each
        apart = perfsim.sweep(**axes)
    finally:
        run.COPY_ROWS = old
    pd.testing.assert_frame_equal(small, apart, check_exact=True)
    pd.testing.assert_frame_equal(chunked, apart, check_exact=True)
    numpy_columns = sum(isinstance(dtype, np.dtype) for dtype in small.dtypes)
    numpy_kinds = len({dtype for dtype in small.dtypes if isinstance(dtype, np.dtype)})
    extension = len(small.columns) - numpy_columns
    assert small._mgr.nblocks == chunked._mgr.nblocks == extension + numpy_kinds
    assert apart._mgr.nblocks == len(apart.columns) - sum(small.dtypes == np.float64) + 1
    before = small.copy()
    small.loc[0, "tp"] = 99  # a column of a shared block is written alone
    small.loc[1, "feasible"] = not small.loc[1, "feasible"]
    changed = (small != before) & ~(small.isna() & before.isna())
    assert changed.to_numpy().sum() == 2


@pytest.mark.parametrize("texts", [["a"], [None], ["a", "a"], ["a", None], [None, "a"], ["a", "b"], [None, None],
                                   ["a", "b", "a"], ["a", None, "a"], []])
def test_text_column_is_pandas_array_of_the_texts(texts):
    from perfsim.explore.chunks import text_column

    value = np.asarray(texts + [0], dtype=object)[:-1]  # (an object array, lists of one text included)
    made = text_column(value)
    expected = pd.array(value, dtype=plan_columns.TEXT)
    pd.testing.assert_extension_array_equal(made, expected)
    assert made.dtype == expected.dtype and made.isna().tolist() == [t is None for t in texts]


@pytest.mark.parametrize("runtime", ["vllm", "trt-llm", "megatron"])
def test_each_row_takes_its_device_familys_runtime_figure(runtime):
    """A grid of several device families: each row's per-family runtime column is its own family's
    (the families' rows found once per grid, the column names made once per key)."""
    from perfsim.plan.columns import _family_keys, build
    from perfsim.plan.grid import expand
    from perfsim.specs.hardware import FAMILIES, load_hardware
    from perfsim.specs.runtime import load_runtime

    hardware = ["a100-80gb", "h100-sxm", "mi300x", "b200"]
    c = build(expand(dict(model="llama2-7b", hardware=hardware, runtime=runtime, batch=[1, 2])))
    figures = load_runtime(runtime).columns()
    families = [load_hardware(h).family for h in hardware for _ in range(2)]
    for key in ("attention_eff", "max_num_seqs", "moe_gemm_eff", "custom_ar_lat_s", "prefill_attn_fixed_s"):
        expected = np.array([figures[f"{key}_{family}"] for family in families])
        assert np.broadcast_to(c[key], expected.shape).tobytes() == expected.tobytes(), key
        assert _family_keys(key) == tuple(f"{key}_{name}" for name in FAMILIES) and _family_keys(key) is _family_keys(key)
        assert not any(name in c for name in _family_keys(key)) or key == "attention_eff"


@pytest.mark.parametrize("args", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="llama2-7b", hardware="a100-80gb", tp=1, mode="train", zero=0),
                                  dict(model="llama2-7b", hardware={"base": "h100-sxm", "tdp_w": 500}, power_cap_w=300)])
def test_one_row_key_is_each_arguments_value_keyed(args):
    """The one-configuration memo's key: each argument's value keyed as given, the parts of those left
    at their default made once (a default given explicitly keys alike)."""
    from perfsim.plan.columns import _row_key
    from perfsim.plan.grid import DEFAULT_AXES, expand
    from perfsim.specs.memo import frozen

    grid = expand(args)
    assert _row_key(grid) == tuple((name, frozen(axis.values[0])) for name, axis in grid.axes.items())
    assert any(axis is DEFAULT_AXES.get(name) for name, axis in grid.axes.items())
    assert _row_key(expand(dict(args, batch=[1, 2]))) is None


@pytest.mark.parametrize("stride", [1, 2, 7, 15, 16, 17, 250, 250000])
@pytest.mark.parametrize("length", [2, 3, 10, 100])
def test_axis_codes_of_a_block_are_those_division_gives(stride, length, monkeypatch):
    """A block's codes, laid out from runs or a tiled cycle, are (row // stride) % length on every row
    (blocks of no, one and many rows, starting inside a run and a cycle, longer than a cycle)."""
    from perfsim.plan import grid
    from perfsim.plan.grid import axis_codes

    monkeypatch.setattr(grid, "_DIVIDED_ROWS", 1)  # every block of rows laid out from runs or a cycle
    rng = np.random.default_rng(stride * 1000 + length)
    total = stride * length * 3
    bounds = [(0, 0), (0, 1), (5, 6), (0, total), (stride - 1, stride * length + 1)]
    bounds += [tuple(sorted(rng.integers(0, total + 1, 2).tolist())) for _ in range(20)]
    for start, stop in bounds:
        want = (np.arange(start, stop, dtype=np.int64) // stride) % length
        made = axis_codes(start, stop, stride, length)
        assert made.dtype == want.dtype and np.array_equal(made, want), (start, stop)
