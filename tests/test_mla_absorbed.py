"""MLA decode in the absorbed form: the key/value up-projection becomes two per-head batched GEMMs
(q_nope x W^UK, latent output x W^UV), one group per head, priced by the grouped GEMM curve; the
serving simulator's context-dependent tables carry these phase-dependent GEMMs."""

import numpy as np
import pytest

from perfsim.analytical.inference import attention_cost, forward_time
from perfsim.cost.price import price
from perfsim.graph.transformer import Gemm, Pass, attention_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _config(**kw):
    return build(expand({"model": "deepseek-v3", "hardware": "h200", "mode": "inference", "batch": 1,
                         "prompt_len": 128, "runtime": "trt-llm", **kw}))


def _pass(tokens, causal):
    q = np.where(causal > 0, tokens, 1.0)
    seqs = tokens / q
    return Pass(tokens=tokens, seqs=seqs, q_len=q, kv_len=np.maximum(q, 1024.0), causal=causal, logits_tokens=seqs)


def _gemms(c, p):
    return {op.name: op for op in attention_ops(c, p) if isinstance(op, Gemm)}


def test_decode_runs_per_head_bmms_prefill_the_up_projection():
    """DeepSeek-V3 (128 heads, qk_nope 128, kv_lora 512, v_head_dim 128): decode multiplies
    [T, 128] by [128, 512] and [T, 512] by [512, 128] in 128 groups, the same FLOPs as the
    [T, 512] x [512, 128 x 256] up-projection prefill runs, which decode skips."""
    c = _config()
    dec, pre = _gemms(c, _pass(64.0, 0.0)), _gemms(c, _pass(1024.0, 1.0))
    q, v = dec["q_absorb"], dec["v_absorb"]
    assert (float(q.n), float(q.k), float(q.groups)) == (512.0, 128.0, 128.0)
    assert (float(v.n), float(v.k), float(v.groups)) == (128.0, 512.0, 128.0)
    assert float(dec["kv_up"].n) == 0.0
    assert float(pre["kv_up"].n) == 128.0 * 256.0 and float(pre["q_absorb"].n) == 0.0
    flops = lambda op: 2.0 * op.m * op.n * op.k * op.groups  # noqa: E731
    assert float(flops(q) + flops(v)) == pytest.approx(2.0 * 64 * 512 * 128 * 256)


def test_batched_heads_cost_more_than_one_wide_gemm():
    """Per-head GEMMs with K 128 / N 128 reach a lower rate than one wide GEMM of the same FLOPs
    (the grouped curve's tile and wave quantisation), so decode's BMMs cost more than the
    up-projection would; a model without MLA has neither."""
    c = _config(dtype="bf16")
    for tokens in (16.0, 1024.0):
        dec = _gemms(c, _pass(tokens, 0.0))
        bmm = float(np.asarray(price(c, [dec["q_absorb"], dec["v_absorb"]])["gemm_s"]))
        wide = float(np.asarray(price(c, [Gemm("kv_up", tokens, 128.0 * 256.0, 512.0)])["gemm_s"]))
        assert bmm > 1.2 * wide
    llama = build(expand({"model": "llama3-8b", "hardware": "h200", "runtime": "trt-llm", "batch": 1, "prompt_len": 128}))
    g = _gemms(llama, _pass(64.0, 0.0))
    assert float(g["q_absorb"].n) == 0.0 and float(g["v_absorb"].n) == 0.0


def test_serving_tables_carry_the_phase_gemms():
    """attention_cost holds the BMMs of a decode pass and the up-projection of a prefill pass, so
    the part forward_time adds to it depends on the token count alone (decode and prefill agree)."""
    c = _config()
    tokens = 256.0
    # the same sequences and logits, one pass decoding, one (a causal row each) prefilling
    dec = Pass(tokens=tokens, seqs=tokens, q_len=1.0, kv_len=1024.0, causal=0.0, logits_tokens=tokens)
    pre = Pass(tokens=tokens, seqs=tokens, q_len=1.0, kv_len=1024.0, causal=1.0, logits_tokens=tokens)
    rest = [float(np.asarray(forward_time(c, p)[0] - attention_cost(c, p)["total_s"])) for p in (dec, pre)]
    assert rest[0] == pytest.approx(rest[1], rel=1e-9)
    bare = float(np.asarray(attention_cost(c, dec, mla_gemms=False)["total_s"]))
    assert float(np.asarray(attention_cost(c, dec)["total_s"])) > bare
