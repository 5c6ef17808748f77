"""weight_layout: weight matrices split over the tensor-parallel ranks along one dimension (default) or 2D
weight-stationary over an X x YZ grid (Pope et al. 2022, Sec. 3.2), and the collectives each takes."""

import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.graph.transformer import Pass, attention_ops, dense_mlp_ops
from perfsim.graph.weight_layout import grid_x
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

# PaLM 540B's shape (PaLM Table 1): d_model 18432, 48 query heads of 256 and one KV head, d_ff 73728 (SwiGLU)
PALM = {"hidden_size": 18432, "num_hidden_layers": 118, "num_attention_heads": 48, "num_key_value_heads": 1,
        "head_dim": 256, "intermediate_size": 73728, "vocab_size": 256000, "hidden_act": "silu",
        "tie_word_embeddings": True, "max_position_embeddings": 2048}
PLAN = dict(model=PALM, hardware="tpu-v4", num_devices=64, tp=64, mode="inference", batch=64, prompt_len=1984,
            gen_len=64, dtype="bf16", weight_dtype="int8", attention_sharding="batch")
DECODE = Pass(tokens=64.0, seqs=64.0, q_len=1.0, kv_len=2000.0, causal=0.0, logits_tokens=64.0)


def _config(parallel=False, **kw):
    return build(expand({**PLAN, "model": {**PALM, "parallel_attn_mlp": parallel}, **kw}))


def _comms(c):
    ops = attention_ops(c, DECODE) + dense_mlp_ops(c, DECODE)
    return {op.name: (op.op, float(op.size_bytes), float(op.ranks)) for op in ops if hasattr(op, "ranks")}


def test_grid_by_hand():
    """PaLM 540B's layer: 12,800 + 147,456 columns in (fused QKV, gate and up), 12,288 + 73,728 out, so
    X = sqrt(2 x 64 x 18432 / 246272) = 3.1 -> 4 on 64 chips (the authors' 4 x 4 x 4 mesh: d_model over x,
    heads and d_ff over y and z), 8 on 256; a power of two that does not divide tp gives way to one that does."""
    assert float(grid_x(_config(weight_layout="2d"))) == 4.0
    assert float(grid_x(_config(weight_layout="2d", tp=256, num_devices=256))) == 8.0
    odd = dict(tp=6.0, hidden=1000.0, heads=1.0, kv_heads=0.0, head_dim=1.0, gated=0.0, ffn=374.0, parallel_block=0.0)
    assert float(grid_x(odd)) == 2.0  # sqrt(2 x 6 x 1000 / 750) = 4, which does not divide 6


def test_two_d_collectives_of_a_parallel_block_by_hand():
    """Decode of 64 tokens, bf16 activations, PaLM's parallel block on a 4 x 16 grid: the layer's input
    (64 x 18432 / 4 x 2 B) is gathered over the 16 y-z ranks, the norm's fp32 mean square summed over
    the 4 x ranks, the fused q/wi partial sums (64 x 160,256 / 16 x 2 B) reduce-scattered over x, the
    o/wo input (64 x 86,016 / 16 x 2 B) gathered over x and the output reduce-scattered over y-z; no
    all-reduce, and the feed-forward half adds nothing of its own."""
    comms = _comms(_config(parallel=True, weight_layout="2d"))
    edge = 64 * 18432 / 4 * 2
    assert comms["tp_attn_in_all_gather"] == ("all_gather", edge, 16.0)
    assert comms["tp_attn_norm_all_reduce"] == ("all_reduce", 64 * 4.0, 4.0)
    assert comms["tp_attn_in_reduce_scatter"] == ("reduce_scatter", pytest.approx(64 * 160256 / 16 * 2), 4.0)
    assert comms["tp_attn_out_all_gather"] == ("all_gather", pytest.approx(64 * 86016 / 16 * 2), 4.0)
    assert comms["tp_attn_out_reduce_scatter"] == ("reduce_scatter", edge, 16.0)
    assert comms["tp_attn"][1] == 0.0
    assert all(size == 0.0 for name, (_, size, _) in comms.items() if name.startswith("tp_mlp"))


def test_two_d_collectives_of_a_sequential_layer_by_hand():
    """Without the parallel block each block runs its own four: attention's 12,800 columns in and
    12,288 out, the feed-forward layer's 2 x 73,728 in and 73,728 out."""
    comms = _comms(_config(weight_layout="2d"))
    assert comms["tp_attn_in_reduce_scatter"][1] == pytest.approx(64 * 12800 / 16 * 2)
    assert comms["tp_attn_out_all_gather"][1] == pytest.approx(64 * 12288 / 16 * 2)
    assert comms["tp_mlp_in_reduce_scatter"][1] == pytest.approx(64 * 147456 / 16 * 2)
    assert comms["tp_mlp_out_all_gather"][1] == pytest.approx(64 * 73728 / 16 * 2)
    assert comms["tp_mlp_in_all_gather"] == comms["tp_attn_in_all_gather"]
    assert comms["tp_mlp"][1] == comms["tp_attn"][1] == 0.0


def test_one_d_is_the_all_reduce_and_the_default():
    """1D ends each block in one all-reduce of its output over the 64 ranks, as before the choice
    existed; not given, the plan is 1D."""
    comms = _comms(_config())
    assert comms["tp_attn"] == ("all_reduce", 64 * 18432 * 2.0, 64.0) == comms["tp_mlp"]
    assert not any(name.endswith("reduce_scatter") for name in comms)
    assert perfsim.estimate(**PLAN)["tpot_s"] == perfsim.estimate(**PLAN, weight_layout="1d")["tpot_s"]


def test_two_d_volume_falls_with_the_grid():
    """Pope et al.'s point: the 1D all-reduce moves 2 (n-1)/n x tokens x d_model per chip whatever the
    chips, the 2D layout's collectives fall as 1/sqrt(n): at 256 chips they move less than at 64."""
    def moved(n):
        comms = _comms(_config(weight_layout="2d", tp=n, num_devices=n))
        return sum(size * (ranks - 1) / ranks for op, size, ranks in comms.values() if op != "all_to_all")
    assert moved(256) < moved(64) < 2 * 63 / 64 * 64 * 18432 * 2 * 2


def test_sweep_rows_equal_estimates():
    """One sweep over both layouts gives each row the estimate of its configuration."""
    frame = perfsim.sweep(**{**PLAN, "weight_layout": ["1d", "2d"], "batch": [8, 64]})
    for _, row in frame.iterrows():
        one = perfsim.estimate(**{**PLAN, "weight_layout": row["weight_layout"], "batch": int(row["batch"])})
        assert row["tpot_s"] == pytest.approx(one["tpot_s"], rel=1e-12)


def test_bad_input():
    with pytest.raises(InputError, match="weight_layout"):
        perfsim.estimate(**PLAN, weight_layout="3d")
    with pytest.raises(InputError, match="weight_layout"):
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", weight_layout="2d")
