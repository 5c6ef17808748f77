"""An engine that runs its context attention in fp8 over an fp8 KV cache (TensorRT-LLM's fp8 context
FMHA; runtime ``prefill_attention_fp8_efficiency_on``) prices the prefill call's attention core at the
fp8 peak and GEMM ceiling with that kernel's own long-call share; a 16-bit KV cache, a device without
fp8, an engine without the key, and decode calls keep the 16-bit core."""

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, attention_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.hardware import load_hardware
from perfsim.specs.runtime import _build


def _config(**kw):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "inference", "batch": 1,
                         "prompt_len": 128, "runtime": "trt-llm", **kw}))


def _f(x):
    return float(np.asarray(x))


def _core(c, p):
    return next(op for op in attention_ops(c, p) if op.name == "attention")


def _prefill(batch, length):
    return Pass(tokens=batch * length, seqs=batch, q_len=length, kv_len=length, causal=1.0, logits_tokens=batch)


def test_fp8_kv_cache_selects_the_fp8_core():
    """H100 (bf16 989.5, fp8 1979 TFLOP/s): an fp8 plan (its KV cache fp8 too) runs the core at its own
    peak (ratio 1) and share 0.475; a bf16 plan over an fp8 KV cache at twice its peak; a 16-bit KV cache
    keeps the 16-bit core and share 0.632."""
    spec = load_hardware("h100-sxm")
    c = _config(dtype="fp8")
    assert (_f(c["prefill_attn_peak_ratio"]), _f(c["prefill_attn_eff"])) == pytest.approx((1.0, 0.475))
    assert _f(c["prefill_attn_gemm_max"]) == pytest.approx(spec.gemm_max("fp8"))
    b = _config(dtype="bf16", kv_dtype="fp8")
    assert (_f(b["prefill_attn_peak_ratio"]), _f(b["prefill_attn_eff"])) == pytest.approx((2.0, 0.475))
    for c16 in (_config(dtype="fp8", kv_dtype="bf16"), _config(dtype="bf16")):
        assert _f(c16["prefill_attn_peak_ratio"]) == pytest.approx(_f(c16["attn_peak_ratio"]))
        assert _f(c16["prefill_attn_gemm_max"]) == pytest.approx(spec.gemm_max("bf16"))
        assert _f(c16["prefill_attn_eff"]) == pytest.approx(0.632)


def test_no_fp8_core_without_the_key_or_the_format():
    """vLLM gives no fp8 share; an A100 has no fp8 format: both keep the 16-bit core."""
    v = _config(runtime="vllm", dtype="fp8")
    assert _f(v["prefill_attn_peak_ratio"]) == pytest.approx(0.5)
    a = _config(hardware="a100-80gb", dtype="bf16", kv_dtype="fp8")
    assert (_f(a["prefill_attn_peak_ratio"]), _f(a["prefill_attn_eff"])) == pytest.approx((1.0, 0.595))


def test_long_prefill_call_speeds_up_by_the_rate_ratio():
    """A compute-bound prefill call of an fp8 plan: its roofline time scales by the 16-bit core's rate
    over the fp8 core's, (989.5 x g16 x 0.632) / (1979 x g8 x 0.475); a decode call is unchanged."""
    spec = load_hardware("h100-sxm")
    c = _config(dtype="fp8")
    c16 = dict(c, prefill_attn_peak_ratio=c["attn_peak_ratio"], prefill_attn_gemm_max=c["attn_gemm_max"],
               prefill_attn_eff=0.632, prefill_attn_fixed_s=0.0, prefill_attn_tile_s=0.0)
    c8 = dict(c, prefill_attn_fixed_s=0.0, prefill_attn_tile_s=0.0)
    op = _core(c, _prefill(8.0, 8192.0))
    launch = _f(c["launch_s"])
    t16, t8 = (_f(price(x, [op])["attention_s"]) - launch for x in (c16, c8))
    ratio = (989.5 * spec.gemm_max("bf16") * 0.632) / (1979.0 * spec.gemm_max("fp8") * 0.475)
    assert t8 == pytest.approx(t16 * ratio, rel=1e-9)
    assert t8 < t16
    decode = _core(c, Pass(tokens=64.0, seqs=64.0, q_len=1.0, kv_len=1024.0, causal=0.0, logits_tokens=64.0))
    assert _f(price(c8, [decode])["attention_s"]) == _f(price(c16, [decode])["attention_s"])


def test_bad_share_is_rejected():
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        _build({"name": "x", "description": "x", "mode": "inference", "step_overhead_ms": 0.0, "kernels_per_layer": 1,
                "attention": "flash", "attention_efficiency": 0.8, "grad_reduce_bytes": 2, "dp_overlap": 0.0,
                "tp_overlap": 0.0, "dropout": False, "fragmentation": 0.0,
                "prefill_attention_fp8_efficiency_on.hopper": 0.0}, "x.yaml")
