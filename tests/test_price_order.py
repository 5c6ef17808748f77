"""price() adds a configuration's op terms in one order, op order, whether the ops of a kind are priced
together (a single estimate) or each on its own arrays (a block of a sweep): a row's result does not
depend on how a sweep was chunked, and a single estimate is a sweep of one row, bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import perfsim
from perfsim.cost import op_order
from perfsim.cost import price as pricing
from perfsim.report.plot import _flat  # an estimate result as dotted keys, as the plots read it


def _loop(parts, count):
    """The op-by-op sum: ``0 + t1 + t2 + ...`` per key over the items that have it, in item order."""
    by_item = [{} for _ in range(count + 1)]
    for positions, terms in parts:
        if isinstance(terms, dict):
            by_item[positions] = terms
            continue
        keys, terms = terms
        for row, position in enumerate(positions):
            by_item[position] = dict(zip(keys, terms[:, row], strict=True))
    out = {}
    for terms in by_item:
        for key, value in terms.items():
            out[key] = out.get(key, 0.0) + value
    return out


def _same(got, want):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return got.shape == want.shape and np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("seed", range(8))
def test_the_stacked_sum_is_the_op_by_op_loop_bit_for_bit(seed):
    """Terms of many magnitudes (where the order of additions shows), NaN, inf, -0, items whose terms
    are one number beside items with rows (broadcast), keys only some items have: the same bits as
    adding them in item order."""
    rng = np.random.default_rng(seed)
    count, width = 12, 5
    order = rng.permutation(np.arange(1, count + 1))
    cuts = np.sort(rng.choice(np.arange(1, count - 1), size=3, replace=False))
    cuts = np.append(cuts, count - 1)  # (the last part one item)
    parts = []
    for i, positions in enumerate(np.split(order, cuts)):
        keys = ("a", "b", "c") if i % 2 else ("b", "a")
        rows = ((width,), (), (1,), (width,), ())[i]
        terms = rng.random((len(keys), len(positions), *rows)) * 10.0 ** rng.integers(-8, 8, size=(1, len(positions),
                                                                                                  *rows))
        terms[rng.random(terms.shape) < 0.1] = -0.0
        if rng.random() < 0.4:
            terms.flat[rng.integers(terms.size)] = rng.choice([np.nan, np.inf, -np.inf])
        if len(positions) == 1:  # one item: its dict of terms, numbers or rows
            parts.append((positions[0], dict(zip(keys, terms[:, 0], strict=True))))
        else:
            parts.append((positions, (keys, terms)))
    with np.errstate(invalid="ignore"):  # (inf - inf)
        got, want = op_order.sum_in_op_order(parts, count), _loop(parts, count)
    assert list(got) == ["b", "a", "c"] and got.keys() == want.keys()
    for key in want:
        assert _same(got[key], np.broadcast_to(want[key], (width,))), (key, got[key], want[key])


def test_only_negative_zeros_sum_to_the_loops_positive_zero():
    """0 + (-0) is +0: the row of zeros in front makes an all -0 key sum to +0, as the loop does."""
    parts = [([1, 2], (("a",), np.array([[-0.0, -0.0]]))), (3, {"a": -0.0})]
    assert _same(op_order.sum_in_op_order(parts, 3)["a"], 0.0)
    assert np.signbit(np.add.accumulate(np.array([-0.0, -0.0]))[-1])  # (without it: -0)


def test_a_term_the_same_for_every_item_counts_once_per_item():
    def cost(c, x, m, k):
        return {"t": m * k, "fixed": 0.1}

    items = [(1.0, 3.0), (2.0, 3.0), (4.0, 3.0)]
    keys, terms = pricing._item_terms(cost, {}, None, items, 0)
    assert keys == ("t", "fixed") and terms.shape == (2, 3)
    got = op_order.sum_in_op_order([(np.arange(1, 4), (keys, terms))], 3)
    assert _same(got["fixed"], 0.0 + 0.1 + 0.1 + 0.1) and _same(got["t"], 0.0 + 3.0 + 6.0 + 12.0)


REPRO = dict(model="llama2-70b", hardware="h100-sxm", tp=2, batch=[13, 14], prompt_len=[288, 320], gen_len=[16, 24, 32])


def test_a_sweep_does_not_depend_on_its_chunks():
    whole = perfsim.sweep(**REPRO)
    for chunk_rows in (1, 5):
        pd.testing.assert_frame_equal(perfsim.sweep(**REPRO, chunk_rows=chunk_rows), whole, check_exact=True)


MIXED = [
    (dict(hardware="h100-sxm", prompt_len=1000),
     dict(model=["llama2-70b", "mixtral-8x7b"], tp=[2, 8], batch=[1, 13], gen_len=[16, 33], dtype=["bf16", "fp8"])),
    (dict(model="llama2-13b", hardware="a100-80gb", prompt_len=512, gen_len=32),
     dict(batch=[4, 32], offload_weights=["none", "gpu=0.5,cpu=0.5"])),
    (dict(hardware="h100-sxm", mode="train", num_devices=8, seq_len=1024, global_batch=64),
     dict(model=["llama2-7b", "mixtral-8x7b"], tp=[1, 2], dtype=["bf16", "fp8"], micro_batch=[1, 2])),
]


@pytest.mark.parametrize(("base", "axes"), MIXED)
def test_every_row_of_a_mixed_sweep_is_its_single_estimate(base, axes):
    rows = perfsim.sweep(**base, **axes)
    assert len(rows) == np.prod([len(v) for v in axes.values()])
    numeric = [c for c in rows.columns if not c.startswith("plan.") and rows[c].dtype.kind == "f"]
    compared = 0
    for values in itertools.product(*axes.values()):
        plan = dict(zip(axes, values, strict=True))
        row = rows.loc[np.logical_and.reduce([rows[k] == v for k, v in plan.items()])]
        assert len(row) == 1, plan
        one = _flat(perfsim.estimate(**base, **plan))
        for column in numeric:
            if column in one and one[column] is not None:
                got, want = row[column].to_numpy(dtype=float)[0], float(one[column])
                assert _same(got, want) or (np.isnan(got) and np.isnan(want)), (plan, column, got, want)
                compared += 1
    assert compared > 20 * len(rows)


ABSENT_PLANS = [dict(model="llama2-70b", hardware="h100-sxm", tp=8),  # dense: MLA GEMMs of no size, no casts
                dict(model="deepseek-v2-lite", hardware="h100-sxm", tp=8, dtype="fp8"),
                dict(model="mixtral-8x7b", hardware="a100-80gb", tp=2, cp=2, num_devices=4),
                dict(model="llama2-7b", hardware="npu")]  # (engines: nothing left out)


@pytest.mark.parametrize("plan", ABSENT_PLANS)
@pytest.mark.parametrize("backward", [False, True])
def test_ops_absent_on_every_row_are_left_out_with_the_same_bits(plan, backward, monkeypatch):
    """A GEMM with a dimension that is a number 0 and an elementwise op that moves a number 0 of bytes
    add +0 (or -0) to every sum: a single configuration's pricing leaves them out, and gives the same
    bits as pricing them (the passes of a pair, one pass, the gradient pass)."""
    from perfsim.graph.transformer import Pass, head_ops, layer_ops
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    c = build(expand(plan))
    pair = Pass(*(np.array(v) for v in ([8192.0, 4.0], [4.0, 4.0], [2048.0, 1.0], [2048.0, 2100.0], [1.0, 0.0],
                                        [4.0, 4.0])))
    ops = [op for p in (pair, Pass(4096.0, 2.0, 2048.0, 2048.0, 1.0, 2.0))
           for op in (*layer_ops(c, p, moe=False), *head_ops(c, p))]
    seen = []
    shapes = pricing._gemm_shapes
    monkeypatch.setattr(pricing, "_gemm_shapes", lambda c, op, x: seen.append(op.name) or shapes(c, op, x))
    with np.errstate(all="ignore"):
        left_out = pricing.price(c, ops, backward=backward)
        priced = seen[:]
        seen.clear()
        monkeypatch.setattr(pricing, "_NUMBERS", ())  # (no number is read as 0: every op priced)
        every = pricing.price(c, ops, backward=backward)
    assert left_out.keys() == every.keys()
    for key in every:
        assert _same(np.broadcast_to(left_out[key], np.shape(every[key])), every[key]), key
    zero = [op.name for op in ops if hasattr(op, "n") and any(type(v) in (float, np.float64) and v == 0.0
                                                                  for v in (op.m, op.n, op.k, op.groups))]
    if plan["hardware"] == "npu":
        assert priced == seen
    elif plan["model"] == "llama2-70b":  # the dense model's MLA GEMMs are never priced
        assert {"q_down", "kv_down", "q_absorb"} <= set(zero) and not set(zero) & set(priced)
        assert len(priced) == len(seen) - len(zero) < len(seen)


@pytest.mark.parametrize("plan", ABSENT_PLANS[:3])
def test_a_model_without_mla_holds_its_absorbed_fields_as_numbers_with_the_arrays_values(plan):
    """A pair of passes priced together: a model without MLA runs no absorbed decode on any pass, so
    what depends on that alone (the absorbed GEMMs, the attention's head dims) is one number, not an
    array of the two; each pass's ops hold the same values, bit for bit, as that pass's own."""
    from perfsim.graph.transformer import Pass, attention_ops
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    c = build(expand(plan))
    fields = ([8192.0, 4.0], [4.0, 4.0], [2048.0, 1.0], [2048.0, 2100.0], [1.0, 0.0], [4.0, 4.0])
    pair = attention_ops(c, Pass(*(np.array(v) for v in fields)))
    alone = [attention_ops(c, Pass(*(np.float64(v[i]) for v in fields))) for i in (0, 1)]
    mla = plan["model"].startswith("deepseek")
    core = next(op for op in pair if op.name == "attention")
    assert (np.ndim(core.depth), np.ndim(next(op for op in pair if op.name == "q_absorb").groups)) == \
        ((1, 1) if mla else (0, 0))
    for i, ops in enumerate(alone):
        for got, want in zip(pair, ops, strict=True):
            for name, value in vars(want).items():
                if isinstance(value, (float, np.floating)):
                    picked = np.asarray(getattr(got, name))
                    assert _same(picked[i] if picked.ndim else picked, value), (want.name, name)
