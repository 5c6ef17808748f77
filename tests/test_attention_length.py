"""Fused attention's FLOP rate rises with the length of each call: fixed costs per query tile and
per causal diagonal, amortised over the keys each query row attends."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perfsim.cost.price import ATTENTION_TILE_KEYS, attention_length_eff, price
from perfsim.graph.transformer import Attention, Pass, attention_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _config(**kw):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "train", "seq_len": 8192,
                         "global_batch": 8, "runtime": "nemo", **kw}))


def _core(c, p):
    return next(op for op in attention_ops(c, p) if op.name == "attention")


def test_length_factor_by_hand():
    """Forward fixed costs 140 keys per query tile and 100 per diagonal: a causal 2K call (1024.5
    keys a row on average) reaches 1024.5 / 1264.5 of the long-call rate, an 8K one 4096.5 / 4336.5;
    a bidirectional 2K call 2048 / 2188. Backward: 360 and 280."""
    assert ATTENTION_TILE_KEYS[False] == (140.0, 100.0) and ATTENTION_TILE_KEYS[True] == (360.0, 280.0)
    eff = attention_length_eff(np.array([1024.5, 4096.5, 2048.0]), 1.0, np.array([1.0, 1.0, 0.0]))
    assert eff == pytest.approx([1024.5 / 1264.5, 4096.5 / 4336.5, 2048.0 / 2188.0], rel=1e-12)
    assert float(attention_length_eff(1024.5, 1.0, 1.0, backward=True)) == pytest.approx(1024.5 / 1664.5, rel=1e-12)


def test_price_of_causal_calls_by_hand():
    """The priced time of a compute-bound causal call is its FLOPs over peak x gemm ceiling x
    attention_efficiency x wave efficiency x length factor; blocks in whole waves (wave 1)."""
    c = _config()
    units = float(np.asarray(c["units"]))
    peak = float(np.asarray(c["peak_flops"] * c["attn_peak_ratio"]))
    base = float(np.asarray(c["attn_gemm_max"] * c["attention_eff"]))
    for length in (2048.0, 8192.0):
        span = (length + 1.0) / 2.0
        flops = 2.0 * 32 * length * span * 256
        op = Attention("attention", flops, 1.0, units * 8, span=span, visits=1.0, diagonal=1.0)
        t = price(c, [op])["attention_s"] - c["launch_s"]
        expected = flops / (peak * base * span / (span + 240.0))
        assert float(np.asarray(t)) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(span=st.floats(1.0, 1e7), longer=st.floats(1.0, 64.0), visits=st.floats(0.0, 64.0),
       diagonal=st.sampled_from([0.0, 1.0]), backward=st.booleans())
def test_longer_calls_never_run_slower_per_flop(span, longer, visits, diagonal, backward):
    short = attention_length_eff(span, visits, diagonal, backward=backward)
    long = attention_length_eff(span * longer, visits, diagonal, backward=backward)
    assert 0.0 < short <= long <= 1.0


def test_longer_training_sequences_run_attention_faster_per_flop():
    """Whole training steps, llama3-8b on 8 H100s, micro-batch 1: attention time per attention
    FLOP falls as the sequence grows (2K to 32K; wave efficiency 0.970 up to 16K, 0.985 at 32K)."""
    rates = []
    for seq in (2048, 4096, 8192, 16384, 32768):
        c = _config(seq_len=seq, global_batch=8, dp=8)
        p = Pass(tokens=float(seq), seqs=1.0, q_len=float(seq), kv_len=float(seq), causal=1.0,
                 logits_tokens=float(seq))
        op = _core(c, p)
        rates.append(float(np.asarray(op.flops / (price(c, [op])["attention_s"] - c["launch_s"]))))
    assert all(b > a for a, b in zip(rates, rates[1:]))


def test_decode_and_eager_attention_carry_no_length_cost():
    """A decode call (one new row against its cache) runs a split-KV kernel the curve does not
    describe, and eager attention runs as GEMMs: neither gets the per-tile cost, so their price
    does not depend on the keys attended beyond the FLOPs and bytes."""
    c = _config()
    decode = _core(c, Pass(tokens=8.0, seqs=8.0, q_len=1.0, kv_len=300.0, causal=0.0, logits_tokens=8.0))
    assert float(np.asarray(decode.visits)) == 0.0 and float(np.asarray(decode.diagonal)) == 0.0
    stretched = dataclasses.replace(decode, span=decode.span * 1000.0)
    assert price(c, [stretched])["attention_s"] == price(c, [decode])["attention_s"]
    eager = _config(runtime={"base": "nemo", "attention": "eager"})
    prefill = Pass(tokens=512.0, seqs=1.0, q_len=512.0, kv_len=512.0, causal=1.0, logits_tokens=1.0)
    op = _core(eager, prefill)
    assert float(np.asarray(op.visits)) == 0.0 and float(np.asarray(op.diagonal)) == 0.0
    assert float(np.asarray(_core(c, prefill).visits)) == 1.0


def test_context_parallel_calls_visit_each_query_tile_once_per_ring_step():
    """Ring attention over cp ranks runs cp calls per query tile (the causal diagonal one first):
    at 32K over cp 4 the factor is 16384.5 / (16384.5 + 4 x 140 + 100)."""
    c = _config(seq_len=32768, cp=4, global_batch=8, dp=2)
    p = Pass(tokens=8192.0, seqs=1.0, q_len=8192.0, kv_len=32768.0, causal=0.5, logits_tokens=8192.0)
    op = _core(c, p)
    assert float(np.asarray(op.visits)) == 4.0 and float(np.asarray(op.diagonal)) == 1.0
    eff = attention_length_eff(op.span, op.visits, op.diagonal)
    assert float(eff) == pytest.approx(16384.5 / (16384.5 + 660.0), rel=1e-12)
