"""attention_sharding: decode attention and the KV cache split over the tensor-parallel ranks by heads
(default) or by sequences (Pope et al. 2022, Sec. 3.3: multi-query attention sharded by batch)."""

import numpy as np
import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, attention_ops, kv_bytes_per_token
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

# PaLM 540B's shape (PaLM Table 1): multi-query attention, 48 query heads of 256, one KV head
PALM = {"hidden_size": 18432, "num_hidden_layers": 118, "num_attention_heads": 48, "num_key_value_heads": 1,
        "head_dim": 256, "intermediate_size": 73728, "vocab_size": 256000, "hidden_act": "silu",
        "tie_word_embeddings": True, "max_position_embeddings": 2048}
PLAN = dict(model=PALM, hardware="tpu-v4", num_devices=64, tp=64, mode="inference", batch=64, prompt_len=1984,
            gen_len=64, dtype="bf16", weight_dtype="int8")


def _config(**kw):
    return build(expand({**PLAN, **kw}))


def _ops(c, p):
    return {op.name: op for op in attention_ops(c, p)}


def _decode(batch, kv_len=2000.0):
    return Pass(tokens=batch, seqs=batch, q_len=1.0, kv_len=kv_len, causal=0.0, logits_tokens=batch)


def test_kv_cache_per_device_by_hand():
    """64 sequences of 2,048 tokens, 118 layers, one KV head of 256 in bf16 (1,024 B per token and layer):
    by heads every one of the 64 ranks holds all of it, 64 x 2048 x 118 x 1024 B = 14.75 GiB; by batch
    each sequence lives on one rank, 1/64 of that."""
    heads = perfsim.estimate(**PLAN)
    batch = perfsim.estimate(**PLAN, attention_sharding="batch")
    assert heads["memory_per_device_gib"]["kv_cache"] == pytest.approx(14.75)
    assert batch["memory_per_device_gib"]["kv_cache"] == pytest.approx(14.75 / 64)
    assert float(kv_bytes_per_token(_config(attention_sharding="batch"))) == pytest.approx(1024 / 64)
    assert batch["plan"]["attention_sharding"] == "batch" and heads["plan"]["attention_sharding"] == "heads"
    assert not heads["feasible"] and batch["feasible"]  # the copies do not fit a 32 GiB chip
    assert batch["tpot_s"] < heads["tpot_s"]


def test_decode_core_by_hand():
    """Decode at 64 sequences against 2,000 keys. By heads a rank attends all 64 sequences with 48/64
    of a query head and reads their whole cache: 64 x 2000 x 1024 B; by batch one sequence with all
    48 heads: 2000 x 1024 B, the same FLOPs (2 x 2000 x 48 x 512), 48 query rows on the one KV head."""
    heads, batch = (_ops(_config(attention_sharding=s), _decode(64.0))["attention"] for s in ("heads", "batch"))
    assert float(heads.kv_bytes) == pytest.approx(64 * 2000 * 1024)
    assert float(batch.kv_bytes) == pytest.approx(2000 * 1024)
    assert float(batch.flops) == pytest.approx(2 * 2000 * 48 * 512) == float(heads.flops)
    assert float(batch.rows) == pytest.approx(48.0) and float(batch.units) == pytest.approx(1.0)
    # 65 sequences on 64 ranks: the fullest rank attends two
    odd = _ops(_config(attention_sharding="batch"), _decode(65.0))["attention"]
    assert float(odd.kv_bytes) == pytest.approx(2 * 2000 * 1024)


def test_all_to_alls_by_hand():
    """By batch, the 64 new tokens' queries (48/64 heads of 256 in bf16 on each rank: 24,576 B) go to their
    sequences' ranks and the outputs (the same size) come back: two all-to-alls over the 64 ranks per
    layer. None by heads, and none in prefill, which attends by heads."""
    ops = _ops(_config(attention_sharding="batch"), _decode(64.0))
    for name in ("attn_q_all_to_all", "attn_o_all_to_all"):
        assert ops[name].op == "all_to_all" and float(ops[name].ranks) == 64.0
        assert float(ops[name].size_bytes) == pytest.approx(64 * 0.75 * 256 * 2)
    assert "attn_q_all_to_all" not in _ops(_config(), _decode(64.0))
    prefill = Pass(tokens=1984.0, seqs=1.0, q_len=1984.0, kv_len=1984.0, causal=1.0, logits_tokens=1.0)
    by_batch, by_heads = _ops(_config(attention_sharding="batch"), prefill), _ops(_config(), prefill)
    assert float(by_batch["attn_q_all_to_all"].size_bytes) == 0.0
    for field in ("flops", "moved_bytes", "kv_bytes", "rows", "units", "blocks"):
        assert float(getattr(by_batch["attention"], field)) == float(getattr(by_heads["attention"], field))


def test_heads_at_least_ranks_hold_the_same_cache():
    """A model with as many KV heads as ranks holds no copies: by batch (an even batch) its KV cache,
    its decode attention's bytes and FLOPs are what they are by heads; only the all-to-alls are added."""
    plan = dict(model="llama2-7b", hardware="a100-80gb", tp=2, batch=8, prompt_len=512, gen_len=64)
    heads, batch = perfsim.estimate(**plan), perfsim.estimate(**plan, attention_sharding="batch")
    assert batch["memory_per_device_gib"]["kv_cache"] == pytest.approx(heads["memory_per_device_gib"]["kv_cache"])
    cols = [build(expand({**plan, "attention_sharding": s})) for s in ("heads", "batch")]
    a, b = (_ops(c, _decode(8.0, 540.0))["attention"] for c in cols)
    assert float(b.kv_bytes) == pytest.approx(float(a.kv_bytes)) and float(b.flops) == pytest.approx(float(a.flops))
    assert batch["breakdown"]["decode"]["communication_s"] > heads["breakdown"]["decode"]["communication_s"]


def test_sweep_rows_equal_estimates():
    """One sweep over both layouts (and two batches) gives each row the estimate of its configuration."""
    frame = perfsim.sweep(**{**PLAN, "attention_sharding": ["heads", "batch"], "batch": [8, 64]})
    for _, row in frame.iterrows():
        one = perfsim.estimate(**{**PLAN, "attention_sharding": row["attention_sharding"], "batch": int(row["batch"])})
        assert row["tpot_s"] == pytest.approx(one["tpot_s"], rel=1e-12)
        assert row["memory_per_device_gib.kv_cache"] == pytest.approx(one["memory_per_device_gib"]["kv_cache"])


def test_bad_input():
    with pytest.raises(InputError, match="attention_sharding"):
        perfsim.estimate(**PLAN, attention_sharding="rows")
    with pytest.raises(InputError, match="attention_sharding"):
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", attention_sharding="batch")


def test_default_is_by_heads():
    """Not given, the plan attends by heads: the same result as naming it."""
    plan = {**PLAN, "batch": 1}
    assert perfsim.estimate(**plan)["tpot_s"] == perfsim.estimate(**plan, attention_sharding="heads")["tpot_s"]
    assert np.isfinite(perfsim.estimate(**plan)["tpot_s"])
