"""The ops of one configuration priced together (a leading op axis) give the sums of each op priced alone."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.cost import price as pricing
from perfsim.graph.transformer import Pass, embedding_ops, head_ops, layer_ops, lm_head_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

PASSES = (Pass(tokens=4096.0, seqs=2.0, q_len=2048.0, kv_len=2048.0, causal=1.0, logits_tokens=2.0),
          Pass(tokens=2.0, seqs=2.0, q_len=1.0, kv_len=2100.0, causal=0.0, logits_tokens=2.0))
PLANS = [dict(model="llama2-70b", hardware="h100-sxm", tp=8),
         dict(model="mixtral-8x7b", hardware="h100-sxm", tp=4, ep=4, dp=4, num_devices=16),
         dict(model="deepseek-v2-lite", hardware="a100-80gb", weight_dtype="int4"),
         dict(model="llama2-7b", hardware="npu"),
         dict(model="llama2-7b", hardware="h100-pim"),
         dict(model="llama2-13b", hardware="tpu-v5e", tp=4),
         dict(model="llama3-8b", hardware="h100-sxm", mode="train", dtype="fp8", tp=2, dp=8, num_devices=16)]


def _ops(c, p):
    return [*layer_ops(c, p, moe=bool(np.any(c["experts"] > 1))), *head_ops(c, p)]


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("backward", [False, True])
def test_ops_priced_together_equal_each_op_priced_alone(plan, backward):
    c = build(expand(plan))
    # the same columns as arrays of one row: every op priced on its own arrays, summed in op order
    rows = {k: np.atleast_1d(v) for k, v in c.items()}
    for p in PASSES:
        ops = _ops(c, p)
        assert pricing._stackable(c, [p.tokens]) == 0 and pricing._stackable(rows, [p.tokens]) is None
        together, alone = pricing.price(c, ops, backward=backward), pricing.price(rows, _ops(rows, p), backward=backward)
        assert list(together) == list(alone)
        for key, value in alone.items():
            value = np.asarray(value, dtype=float).reshape(-1)
            got = np.asarray(together[key], dtype=float).reshape(-1)
            assert np.array_equal(np.isnan(got), np.isnan(value)), key
            assert np.array_equal(got, value, equal_nan=True), (key, got, value)


class _Recording(dict):
    """Columns that note which of them are read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("plan", PLANS)
def test_the_stacked_terms_read_only_the_columns_checked_for_one_number(plan):
    """A column read by a stacked term but not checked could hold a sweep's axis, which the op axis
    would broadcast against: the list must name every column those terms read."""
    c = build(expand(plan))
    for backward in (False, True):
        for p in PASSES:
            ops = _ops(c, p)
            recording = _Recording(c)
            x = pricing._Setting(recording, backward, True)
            for op in ops:
                if isinstance(op, pricing.Gemm):
                    for shape in pricing._gemm_shapes(recording, op, x):
                        pricing._gemm_cost(recording, x, *shape)
                elif isinstance(op, pricing.Elementwise):
                    pricing._elementwise_cost(recording, x, *pricing._elementwise_fields(op, x))
                elif isinstance(op, pricing.Comm):
                    pricing._comm_cost(recording, x, op.op, op.size_bytes, np.maximum(op.ranks, 2.0), False)
            assert recording.read <= set(pricing._PRICED_COLUMNS), recording.read - set(pricing._PRICED_COLUMNS)


def _bits(value):
    return np.asarray(value, dtype=float).reshape(-1).view(np.int64)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("backward", [False, True])
def test_op_lists_priced_in_one_call_equal_each_list_priced_alone(plan, backward):
    """price_segments: a configuration's layer, embedding and head ops (and an empty list) in one call,
    for one pass and for a pair of passes on a short axis; each list's dict has the keys and the bits of
    that list priced alone (the sums broadcast along the longest list's rows)."""
    c = build(expand(plan))
    pair = Pass(*(np.array([getattr(p, f) for p in PASSES]) for f in Pass.__dataclass_fields__))
    for p in (*PASSES, pair):
        lists = [layer_ops(c, p, moe=bool(np.any(c["experts"] > 1))), embedding_ops(c, p), [], lm_head_ops(c, p)]
        together = pricing.price_segments(c, lists, backward=backward)
        assert len(together) == len(lists)
        for ops, got in zip(lists, together, strict=True):
            alone = pricing.price(c, ops, backward=backward)
            assert list(got) == list(alone)
            for key, value in alone.items():
                value = np.broadcast_to(value, np.shape(got[key]))
                assert np.array_equal(_bits(got[key]), _bits(value)), (key, got[key], value)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("weights", [(80.0, 1.0), (np.float64(0.5), 0.0, 3.0), (1e-3, np.asarray(7.0), 1.0)])
def test_op_lists_weighted_in_one_call_equal_their_combine(plan, weights):
    """price_segments with weights (a pass's layers times their count, plus its head): the keys and bits of
    combine() of the lists priced alone, where the sums are weighted and added on a stacked axis."""
    c = build(expand(plan))
    pair = Pass(*(np.array([getattr(p, f) for p in PASSES]) for f in Pass.__dataclass_fields__))
    for p in (*PASSES, pair):
        lists = [layer_ops(c, p, moe=bool(np.any(c["experts"] > 1))), head_ops(c, p), embedding_ops(c, p)]
        lists = lists[:len(weights)]
        got = pricing.price_segments(c, lists, weights=weights)
        want = pricing.combine(*zip(weights, (pricing.price(c, ops) for ops in lists), strict=True))
        assert list(got) == list(want)
        for key, value in want.items():
            value = np.broadcast_to(value, np.shape(got[key]))
            assert np.array_equal(_bits(got[key]), _bits(value)), (key, got[key], value)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("weight_grads", [True, False])
def test_forward_and_gradient_passes_in_one_call_equal_each_pass_alone(plan, weight_grads):
    """price_segments with a pass per list (a training step's forward and gradient lists together: their
    GEMMs, elementwise ops and collectives stacked across the passes): each list's dict has the keys and
    the bits of that list priced alone in its own pass; on a sweep's rows (each op on its own arrays) too."""
    c = build(expand(plan))
    rows = {k: np.atleast_1d(v) for k, v in c.items()}
    for columns in (c, rows):
        for p in PASSES:
            lists = [layer_ops(columns, p, moe=bool(np.any(columns["experts"] > 1))), embedding_ops(columns, p), [],
                     lm_head_ops(columns, p)]
            passes = [False] * len(lists) + [True] * len(lists)
            together = pricing.price_segments(columns, lists + lists, backward=passes, weight_grads=weight_grads)
            for ops, backward, got in zip(lists + lists, passes, together, strict=True):
                alone = pricing.price(columns, ops, backward=backward, weight_grads=weight_grads)
                assert list(got) == list(alone)
                for key, value in alone.items():
                    assert np.array_equal(_bits(got[key]), _bits(np.broadcast_to(value, np.shape(got[key])))), key
                # (a forward pass holds no weight gradient: its sum is left out, not zeros of the gradient's GEMMs)
                assert backward or type(got["wgrad_s"]) is type(alone["wgrad_s"])
