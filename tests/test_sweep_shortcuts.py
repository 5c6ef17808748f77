"""Shortcuts of the sweep path give the values of the general path, to the last bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfsim import estimate, sweep
from perfsim.analytical import evaluate
from perfsim.cost.power import solve_clock
from perfsim.explore import chunks
from perfsim.explore.plan_columns import TEXT, _combinations, _same_everywhere, integers
from perfsim.plan.grid import space as make_space
from perfsim.plan.rows import Detail, per_slice


def _box(rng, shape, repeat_axes):
    """Random values over ``shape`` that repeat along ``repeat_axes``."""
    small = tuple(1 if d in repeat_axes else n for d, n in enumerate(shape))
    return np.broadcast_to(rng.uniform(size=small), shape).copy()


def test_per_slice_computes_once_along_repeated_axes_and_spreads_the_same_bits():
    rng = np.random.default_rng(1)
    shape = (1, 3, 4, 5)
    a, b = _box(rng, shape, {2}), _box(rng, shape, {2, 3})
    calls = []

    def fn(x, y, z):
        calls.append(x.shape)
        return x * y + z, x > y

    got = per_slice(shape, (a, b, 0.5), fn)
    assert calls == [(1, 3, 1, 5)]  # axis 2 repeats in every input; axis 3 varies in a
    want = fn(a, b, 0.5)
    for g, w in zip(got, want, strict=True):
        assert g.shape == shape and g.dtype == w.dtype and g.flags.writeable
        assert np.array_equal(g, w)


def test_per_slice_leaves_varying_inputs_alone():
    rng = np.random.default_rng(2)
    shape = (2, 3)
    assert per_slice(shape, (rng.uniform(size=shape), 1.0), lambda x, y: (x,)) is None


def test_per_slice_tells_signed_zeros_and_nans_apart_by_their_bits():
    x = np.array([[0.0, -0.0], [1.0, 1.0]])
    assert per_slice((2, 2), (x,), lambda v: (v,)) is None  # -0.0 == 0.0 but its bits differ
    x = np.array([[0.0, 0.0], [np.nan, np.nan]])
    got = per_slice((2, 2), (x,), lambda v: (v + 1.0,))  # a NaN repeats bit for bit
    assert np.array_equal(got[0], x + 1.0, equal_nan=True)


def test_a_clock_solved_on_a_box_equals_the_one_solved_row_by_row():
    rng = np.random.default_rng(0)
    shape = (1, 4, 3, 5)
    full = _box(rng, shape, {2}) + 0.1
    compute = full * _box(rng, shape, {2})
    memory = (full - compute) * _box(rng, shape, {2, 3})
    args = (300.0 + 0.0 * full, 0.1, 0.7, (full, compute, memory, 0.5 * memory), 60.0, 50.0,
            400.0 * _box(rng, shape, {2}), 80.0 * _box(rng, shape, {2}), 100.0 + 500.0 * _box(rng, shape, {2}))
    clock, fits = solve_clock(*args)
    flat = [np.ravel(np.broadcast_to(x, shape)) for x in (*args[:3], *args[3], *args[4:])]
    row_clock, row_fits = solve_clock(*flat[:3], tuple(flat[3:7]), *flat[7:])  # one dimension: no box
    assert 0 < np.sum(clock < 1.0) < clock.size
    assert np.array_equal(clock.ravel(), row_clock) and np.array_equal(fits.ravel(), row_fits)


def test_a_detail_gives_many_rows_the_messages_it_gives_each_row():
    rng = np.random.default_rng(3)
    shape = (2, 3, 4)
    need, have = rng.uniform(1e9, 1e11, size=(2, 1, 4)), rng.uniform(1e9, 1e11, size=(1, 3, 1))
    detail = Detail("{:.1f} GiB needed, {:.1f} GiB usable, cap {:g} W", need, have, 300.0, per=2.0 ** 30)
    rows = np.array([0, 5, 13, 23])
    one_by_one = [detail(tuple(int(a[k]) for a in np.unravel_index(rows, shape))) for k in range(len(rows))]
    assert detail.rows(rows, shape) == one_by_one
    assert one_by_one[1] == f"{need[0, 0, 1] / 2 ** 30:.1f} GiB needed, {have[0, 1, 0] / 2 ** 30:.1f} GiB usable, " \
                            f"cap {300.0 / 2 ** 30:g} W"
    flat = Detail("{:.0f}", np.arange(6.0))  # rows of a plain block
    assert flat.rows(np.array([1, 4]), (6,)) == [flat(1), flat(4)] == ["1", "4"]


def test_a_sweep_row_that_cannot_run_says_why_as_its_estimate_does():
    plan = dict(model="llama2-70b", hardware="h100-sxm", batch=[1, 512], prompt_len=[512, 4096], tp=[1, 8])
    df = sweep(**plan)
    assert (~df["feasible"]).sum() >= 2
    for _, row in df.iterrows():
        one = estimate(model="llama2-70b", hardware="h100-sxm", batch=int(row["batch"]),
                       prompt_len=int(row["prompt_len"]), tp=int(row["tp"]))
        assert (row["reason"] if isinstance(row["reason"], str) else None) == one["reason"]


def test_a_chunk_of_several_boxes_gives_its_float_results_in_pieces_that_join_to_the_same_columns(monkeypatch):
    monkeypatch.setattr(evaluate, "_CHUNK", 8)  # boxes of 8 rows
    axes = dict(model="llama2-7b", hardware=["a100-80gb", "h100-pim"], tp=[1, 2], batch=[1, 4, 16, 64],
                prompt_len=[128, 2048], gen_len=[16, 64])
    space = make_space(axes)
    _, apart = evaluate.evaluate_rows(space, 0, space.n, lambda key: key != "ttft_s")
    _, joined = evaluate.evaluate_rows(space, 0, space.n)
    assert list(apart) == list(joined)
    kinds = {type(v) for k, v in apart.items() if joined[k].dtype == float}
    assert kinds == {evaluate.Pieces, np.ndarray}  # ttft_s, and the PIM device's keys of half the boxes, joined
    pim_only = [k for k, v in joined.items() if v.dtype == float and np.isnan(v[:8]).all() and not np.isnan(v).all()]
    assert pim_only and all(isinstance(apart[k], np.ndarray) for k in pim_only)
    for key, value in joined.items():
        assert np.array_equal(np.asarray(apart[key]), value, equal_nan=value.dtype == float), key
    whole = sweep(**axes)
    monkeypatch.setattr(chunks, "evaluate_rows", lambda space, start, stop, apart=None:
                        evaluate.evaluate_rows(space, start, stop))
    pd.testing.assert_frame_equal(whole, sweep(**axes))


def test_the_combinations_of_few_possible_keys_are_those_a_sort_finds():
    rng = np.random.default_rng(4)
    keys = [rng.integers(0, 3, 500), rng.integers(-2, 2, 500), rng.integers(5, 9, 500)]
    combos, inverse = _combinations(*keys)
    flat = (keys[0] * 4 + (keys[1] + 2)) * 4 + (keys[2] - 5)
    uniques, want = np.unique(flat, return_inverse=True)
    assert np.array_equal(inverse, want) and combos.shape == (3, len(uniques))
    assert np.array_equal(combos[:, inverse], np.asarray(keys))


def test_whole_number_plan_columns_spread_from_their_values_are_those_of_every_row():
    df = sweep(model="llama2-7b", hardware="a100-80gb", mode="train", num_devices=8, tp=[1, 2], micro_batch=[1, 3],
               sub_batches=[None, 2])
    assert df["plan.tp"].dtype == np.int64 and df["plan.tp"].tolist() == df["tp"].tolist() == [1] * 4 + [2] * 4
    assert df["plan.sub_batches"].dtype == "Int64"
    assert df["plan.sub_batches"].isna().tolist() == [True, False] * 4  # none given: none
    assert df["plan.sub_batches"].dropna().tolist() == [2] * 4


def test_text_results_read_by_pyarrow_are_pandas_own_text_column():
    value = np.array(["does not fit", None, "does not fit", "ep does not divide the experts", None], dtype=object)
    ours, theirs = chunks.text_column(value), pd.array(value, dtype=TEXT)
    assert ours.dtype == theirs.dtype and ours.equals(theirs)
    assert pd.isna(ours).tolist() == [False, True, False, False, True]


def test_a_detail_made_by_a_function_and_its_either_give_many_rows_the_messages_of_each_row():
    shape = (3, 4)
    total = np.arange(12.0).reshape(shape) * 2 ** 30
    degree = np.array([[1.0], [2.0], [1.0]])
    one = Detail(lambda t, d: f"{t / 2 ** 30:.1f} GiB" + (" (raise tp)" if d == 1 else ""), total, degree)
    other = Detail("{:.0f} rows", total, per=2.0 ** 30)
    either = evaluate._either(np.arange(12).reshape(shape) % 2 == 0, one, other)
    rows = np.array([0, 1, 5, 6, 11])
    where = [tuple(int(a[k]) for a in np.unravel_index(rows, shape)) for k in range(len(rows))]
    assert one.rows(rows, shape) == [one(w) for w in where]
    assert one.rows(rows, shape)[:2] == ["0.0 GiB (raise tp)", "1.0 GiB (raise tp)"]
    assert either.rows(rows, shape) == [either(w) for w in where] == \
        ["0.0 GiB (raise tp)", "1 rows", "5 rows", "6.0 GiB", "11 rows"]  # row 6 is at tp 2


def test_a_small_training_sweeps_reasons_are_its_estimates():
    axes = dict(model="llama2-70b", hardware="a100-80gb", mode="train", num_devices=8, tp=[1, 8], zero=[0, 3],
                recompute=["auto", "none"], global_batch=[64, 100])
    df = sweep(**axes)
    assert df["reason"].str.contains("shard more").any() and df["reason"].str.contains("multiple").any()
    for _, row in df.iterrows():
        one = estimate(model="llama2-70b", hardware="a100-80gb", mode="train", num_devices=8, tp=int(row["tp"]),
                       zero=int(row["zero"]), recompute=row["recompute"], global_batch=int(row["global_batch"]))
        assert (row["reason"] if isinstance(row["reason"], str) else None) == one["reason"]


def _general_combinations(*keys):
    """:func:`_combinations` as a sort finds them, every key laid out on every row."""
    flat = np.asarray(keys, dtype=np.int64)
    combos, inverse = np.unique(flat, axis=1, return_inverse=True)
    return combos, np.ravel(inverse)


@pytest.mark.parametrize("keys", [
    (None, np.zeros(6, bool), np.full(6, 3.0)),  # one value on every row: read at the first row
    (None, np.array([True, True, False, True, True, True]), np.full(6, 3.0)),
    (np.array([1, 1, 1, 1, 1, 2]), np.ones(6, bool), np.array([2.0, np.nan, 2.0, 2.0, 2.0, 2.0])),  # a NaN: -1
    (np.zeros(6, np.int64), np.zeros(6, bool), np.full(6, np.nan)),
    (np.zeros(1, np.int64), np.zeros(1, bool), np.array([7.0])),
    (np.ones(1, np.int64), np.ones(1, bool), np.array([np.nan])),  # one row: its NaN read as -1
])
def test_combinations_of_keys_of_one_value_or_none_are_those_of_every_row_laid_out(keys):
    combos, inverse = _combinations(*keys, nan=-1)
    rows = [np.zeros(len(keys[1]), np.int64) if k is None else np.nan_to_num(k, nan=-1).astype(np.int64) for k in keys]
    want_combos, want_inverse = _general_combinations(*rows)
    assert np.array_equal(combos, want_combos) and np.array_equal(inverse, want_inverse)
    assert combos.dtype == np.int64 and inverse.dtype == np.int64


@pytest.mark.parametrize("values", [[2.0] * 5, [-0.0] * 4, [2.0, 2.0, 2.4, 2.0], [np.nan] * 3, [1.0, np.nan, 1.0],
                                    [8.0, 8.0, 8.0, 8.0, np.nan], [np.inf] * 2, [3.0], [5.0, 4.0, 5.0]])
@pytest.mark.parametrize("nullable", [False, True])
def test_whole_numbers_of_one_value_on_every_row_are_made_whole_once_the_same(values, nullable):
    values = np.asarray(values)
    if len(values) > 1:
        assert _same_everywhere(values) == bool(np.all(values == values[0]))
    if np.isinf(values).any():
        return  # (no whole number to compare)
    made = integers(values, nullable)
    missing = np.isnan(values)
    whole = np.round(np.where(missing, 0, values)).astype(np.int64)
    if nullable:
        pd.testing.assert_extension_array_equal(made, pd.arrays.IntegerArray(whole, missing))
        assert made._data.flags.writeable and made._mask.flags.writeable
    else:
        assert made.dtype == np.int64 and np.array_equal(made, whole) and made.flags.writeable
