"""Paged decode attention pays fixed costs beyond its roofline: a time per call and SM time per
(sequence, KV head) work unit (runtime ``decode_attention_fixed_us_on`` /
``decode_attention_unit_us_on``, per architecture family, fitted to measured decode-attention tables)."""

import dataclasses

import numpy as np
import pytest

from perfsim.cost.price import decode_fixed_time, price
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, attention_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import _build


def _config(**kw):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "inference", "batch": 1,
                         "prompt_len": 128, "runtime": "vllm", **kw}))


def _core(c, p):
    return next(op for op in attention_ops(c, p) if op.name == "attention")


def _decode(batch, kv_len):
    return Pass(tokens=batch, seqs=batch, q_len=1.0, kv_len=kv_len, causal=0.0, logits_tokens=batch)


def test_runtime_keys_resolve_per_family():
    """vllm on Hopper: 10.9 us per call and 3.98 us per work unit; on Ampere 15.5 and 4.14."""
    c = _config()
    assert float(np.asarray(c["decode_attn_fixed_s"])) == pytest.approx(10.9e-6)
    assert float(np.asarray(c["decode_attn_unit_s"])) == pytest.approx(3.98e-6)
    a = _config(hardware="a100-80gb")
    assert float(np.asarray(a["decode_attn_fixed_s"])) == pytest.approx(15.5e-6)
    assert float(np.asarray(a["decode_attn_unit_s"])) == pytest.approx(4.14e-6)
    assert float(np.asarray(_config(runtime="hf-eager")["decode_attn_fixed_s"])) == 0.0


def test_decode_fixed_time_by_hand():
    """Batch 64 of llama3-8b (8 KV heads) on 132 SMs: 10.9 us, plus the work units' 64 x 8 x 3.98 us
    / 132 = 15.4 us where it outlasts the streaming of the cache, which it overlaps."""
    c = _config()
    op = _core(c, _decode(64.0, 1024.0))
    assert float(np.asarray(op.decode)) == 1.0
    units = 64 * 8 * 3.98e-6 / 132
    assert float(np.asarray(decode_fixed_time(c, op))) == pytest.approx(10.9e-6 + units, rel=1e-9)
    assert float(np.asarray(decode_fixed_time(c, op, 5e-6))) == pytest.approx(10.9e-6 + units - 5e-6, rel=1e-9)
    assert float(np.asarray(decode_fixed_time(c, op, 1e-3))) == pytest.approx(10.9e-6, rel=1e-9)
    # priced: a 1K cache streams longer than the units take, a 16-key one does not
    for kv_len in (1024.0, 16.0):
        op = _core(c, _decode(64.0, kv_len))
        bare = price(c, [dataclasses.replace(op, decode=0.0)])["attention_s"]
        stream = float(np.asarray(bare - c["launch_s"]))
        expected = 10.9e-6 + max(units - stream, 0.0)
        assert float(np.asarray(price(c, [op])["attention_s"] - bare)) == pytest.approx(expected, rel=1e-9)
    assert stream < units


def test_fixed_cost_grows_with_work_units_not_with_length():
    """More sequences cost more fixed time, linearly; a longer cache does not add to it."""
    c = _config()
    batches = np.array([1.0, 16.0, 256.0])
    t = np.asarray(decode_fixed_time(c, _core(c, _decode(batches, 512.0))))
    assert np.all(np.diff(t) > 0)
    assert (t[2] - t[1]) / (t[1] - t[0]) == pytest.approx(240.0 / 15.0, rel=1e-9)
    assert np.asarray(decode_fixed_time(c, _core(c, _decode(batches, 8192.0)))) == pytest.approx(t, rel=1e-12)


def test_only_decode_calls_pay_it():
    """Prefill and chunked prefill (more than one new row per sequence) carry no decode cost."""
    c = _config()
    prefill = Pass(tokens=512.0, seqs=1.0, q_len=512.0, kv_len=512.0, causal=1.0, logits_tokens=1.0)
    chunk = Pass(tokens=256.0, seqs=1.0, q_len=256.0, kv_len=1024.0, causal=0.0, logits_tokens=1.0)
    for p in (prefill, chunk):
        assert float(np.asarray(decode_fixed_time(c, _core(c, p)))) == 0.0


def test_an_8_bit_cache_takes_its_own_kernels_figures():
    """vllm over an fp8 cache on Hopper: 12.8 us and 3.73 us; on Ampere, where no 8-bit figure is
    given, the 16-bit ones (15.5 and 4.14)."""
    fp8 = _config(kv_dtype="fp8")
    assert float(np.asarray(fp8["decode_attn_fixed_s"])) == pytest.approx(12.8e-6)
    assert float(np.asarray(fp8["decode_attn_unit_s"])) == pytest.approx(3.73e-6)
    expected = 12.8e-6 + 64 * 8 * 3.73e-6 / 132
    assert float(np.asarray(decode_fixed_time(fp8, _core(fp8, _decode(64.0, 1024.0))))) == pytest.approx(expected)
    ampere = _config(kv_dtype="fp8", hardware="a100-80gb")
    assert float(np.asarray(ampere["decode_attn_fixed_s"])) == pytest.approx(15.5e-6)
    assert float(np.asarray(ampere["decode_attn_unit_s"])) == pytest.approx(4.14e-6)


def test_negative_fixed_cost_is_rejected():
    with pytest.raises(InputError, match="microseconds"):
        _build({"name": "x", "description": "x", "mode": "inference", "step_overhead_ms": 0.0, "kernels_per_layer": 1,
                "attention": "flash", "attention_efficiency": 0.8, "grad_reduce_bytes": 2, "dp_overlap": 0.0,
                "tp_overlap": 0.0, "dropout": False, "fragmentation": 0.0,
                "decode_attention_unit_us_on.hopper": -1.0}, "x.yaml")


def _mla(**kw):
    return build(expand({"model": "deepseek-v3", "hardware": "h200", "mode": "inference", "batch": 1,
                         "prompt_len": 128, "runtime": "trt-llm", "kv_dtype": "fp8", **kw}))


def test_mla_decode_takes_the_mla_kernels_figures_per_query_head():
    """trt-llm MLA decode over an fp8 cache on Hopper: 13.0 us per call and 0.285 us per (sequence,
    query head); batch 64 of DeepSeek-V3's 128 heads on 132 SMs: 64 x 128 x 0.285 / 132 us."""
    c = _mla()
    assert float(np.asarray(c["decode_attn_mla_fixed_s"])) == pytest.approx(13.0e-6)
    assert float(np.asarray(c["decode_attn_mla_unit_s"])) == pytest.approx(0.285e-6)
    op = _core(c, _decode(64.0, 1024.0))
    units = 64 * 128 * 0.285e-6 / 132
    assert float(np.asarray(decode_fixed_time(c, op))) == pytest.approx(13.0e-6 + units, rel=1e-9)
    bf16 = _mla(kv_dtype="bf16", hardware="b200")
    assert float(np.asarray(bf16["decode_attn_mla_fixed_s"])) == pytest.approx(11.0e-6)
    assert float(np.asarray(bf16["decode_attn_mla_unit_s"])) == pytest.approx(0.12e-6)


def test_mla_figures_leave_other_models_and_engines_alone():
    """A GQA model under trt-llm keeps the GQA figures; an engine without MLA figures (vllm) prices
    MLA decode with its decode figures per (sequence, KV head), one latent head per sequence."""
    gqa = _config(runtime="trt-llm", kv_dtype="fp8")
    op = _core(gqa, _decode(64.0, 1024.0))
    assert float(np.asarray(decode_fixed_time(gqa, op))) == pytest.approx(9.6e-6 + 64 * 8 * 1.77e-6 / 132, rel=1e-9)
    v = _mla(runtime="vllm")
    assert np.isnan(float(np.asarray(v["decode_attn_mla_unit_s"])))
    op = _core(v, _decode(64.0, 1024.0))
    assert float(np.asarray(decode_fixed_time(v, op))) == pytest.approx(12.8e-6 + 64 * 3.73e-6 / 132, rel=1e-9)


def test_mla_decode_cost_grows_with_heads_per_device():
    """Halving the heads a device holds (tp 2) halves the per-head work units, not the fixed time."""
    one, two = _mla(), _mla(tp=2, num_devices=2)
    t1 = float(np.asarray(decode_fixed_time(one, _core(one, _decode(512.0, 1024.0)))))
    t2 = float(np.asarray(decode_fixed_time(two, _core(two, _decode(512.0, 1024.0)))))
    assert t1 - 13.0e-6 == pytest.approx(2.0 * (t2 - 13.0e-6), rel=1e-9)
