"""A serving engine's fused prefill attention pays fixed costs beyond its roofline and reaches its own
long-call share of the GEMM ceiling: runtime ``prefill_attention_fixed_us_on``,
``prefill_attention_tile_us_on`` and ``prefill_attention_efficiency_on`` (per architecture family,
fitted to measured prefill-attention tables); decode, training and other engines are untouched."""

import dataclasses

import numpy as np
import pytest

from perfsim.cost.price import prefill_call, prefill_fixed_time, price
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, attention_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import _build


def _config(**kw):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "inference", "batch": 1,
                         "prompt_len": 128, "runtime": "trt-llm", **kw}))


def _core(c, p):
    return next(op for op in attention_ops(c, p) if op.name == "attention")


def _prefill(batch, length):
    return Pass(tokens=batch * length, seqs=batch, q_len=length, kv_len=length, causal=1.0, logits_tokens=batch)


def _f(x):
    return float(np.asarray(x))


def test_runtime_keys_resolve_per_family():
    """trt-llm on Hopper: 12.4 us per call, 4.07 us per tile, share 0.632; on Ampere 8.9, 1.96, 0.595;
    sglang on Ampere gives no share: its attention_efficiency (0.912); a training engine gives none."""
    c = _config()
    assert _f(c["prefill_attn_fixed_s"]) == pytest.approx(12.4e-6)
    assert _f(c["prefill_attn_tile_s"]) == pytest.approx(4.07e-6)
    assert _f(c["prefill_attn_eff"]) == pytest.approx(0.632)
    a = _config(hardware="a100-80gb")
    assert (_f(a["prefill_attn_fixed_s"]), _f(a["prefill_attn_tile_s"]), _f(a["prefill_attn_eff"])) == pytest.approx(
        (8.9e-6, 1.96e-6, 0.595))
    assert _f(_config(runtime="sglang", hardware="a100-80gb")["prefill_attn_eff"]) == pytest.approx(0.912)
    m = _config(runtime="megatron")
    assert (_f(m["prefill_attn_fixed_s"]), _f(m["prefill_attn_tile_s"])) == (0.0, 0.0)
    assert _f(m["prefill_attn_eff"]) == _f(m["attention_eff"])


def test_prefill_fixed_time_by_hand():
    """Batch 4 prompts of 1000 of llama3-8b (32 query heads, 8 query tiles of 128) on 132 SMs:
    12.4 us + 4 x 32 x 8 x 4.07 us / 132 = 12.4 + 31.6 us."""
    c = _config()
    op = _core(c, _prefill(4.0, 1000.0))
    assert _f(op.blocks) == 4 * 32 * 8
    expected = 12.4e-6 + 4 * 32 * 8 * 4.07e-6 / 132
    assert _f(prefill_fixed_time(c, op)) == pytest.approx(expected, rel=1e-9)
    assert _f(prefill_fixed_time(c, op, backward=True)) == 0.0


def test_price_uses_the_prefill_share_and_adds_the_fixed_time():
    """The priced call: launch + FLOPs at the prefill share (0.632 in place of 0.912, a compute-bound
    call 0.912 / 0.632 times longer) + the fixed time."""
    c = _config()
    op = _core(c, _prefill(4.0, 4096.0))
    plain = dict(c, prefill_attn_fixed_s=0.0, prefill_attn_tile_s=0.0, prefill_attn_eff=c["attention_eff"])
    base = _f(price(plain, [op])["attention_s"]) - _f(c["launch_s"])
    new = _f(price(c, [op])["attention_s"]) - _f(c["launch_s"])
    assert _f(c["attention_eff"]) == pytest.approx(0.912)
    assert new - _f(prefill_fixed_time(c, op)) == pytest.approx(base * 0.912 / 0.632, rel=1e-9)


def test_only_prefill_calls_pay_it():
    """A decode call, a gradient pass, and an eager (unfused) call price as before."""
    c = _config()
    decode = _core(c, Pass(tokens=64.0, seqs=64.0, q_len=1.0, kv_len=1024.0, causal=0.0, logits_tokens=64.0))
    assert not bool(np.any(prefill_call(decode)))
    assert _f(prefill_fixed_time(c, decode)) == 0.0
    plain = dict(c, prefill_attn_fixed_s=0.0, prefill_attn_tile_s=0.0, prefill_attn_eff=0.1)
    assert _f(price(c, [decode])["attention_s"]) == _f(price(plain, [decode])["attention_s"])
    op = _core(c, _prefill(2.0, 512.0))
    assert bool(np.all(prefill_call(op))) and not bool(np.any(prefill_call(op, backward=True)))
    eager = dataclasses.replace(op, visits=0.0, diagonal=0.0)
    assert _f(prefill_fixed_time(c, eager)) == 0.0
    assert _f(price(c, [eager])["attention_s"]) == _f(price(plain, [eager])["attention_s"])


def test_fixed_time_grows_with_query_tiles():
    """Linear in the (sequence, head, query tile) work units: a prompt of 1024 has twice the tiles of 512."""
    c = _config()
    t = np.asarray(prefill_fixed_time(c, _core(c, _prefill(np.array([1.0, 1.0, 2.0]), np.array([512.0, 1024.0, 512.0])))))
    assert (t[1] - t[0]) == pytest.approx(32 * 4 * 4.07e-6 / 132, rel=1e-9)
    assert t[2] == pytest.approx(t[1], rel=1e-12)


@pytest.mark.parametrize("key,value,match", [("prefill_attention_tile_us_on.hopper", -1.0, "microseconds"),
                                             ("prefill_attention_efficiency_on.hopper", 1.5, r"\(0, 1\]"),
                                             # a negative share is a share out of range, not a fixed cost
                                             ("prefill_attention_efficiency_on.hopper", -0.5, r"\(0, 1\]"),
                                             ("attention_backward_ratio", 0.0, r"\(0, 1\]")])
def test_bad_values_are_rejected(key, value, match):
    with pytest.raises(InputError, match=match):
        _build({"name": "x", "description": "x", "mode": "inference", "step_overhead_ms": 0.0, "kernels_per_layer": 1,
                "attention": "flash", "attention_efficiency": 0.8, "grad_reduce_bytes": 2, "dp_overlap": 0.0,
                "tp_overlap": 0.0, "dropout": False, "fragmentation": 0.0, key: value}, "x.yaml")
