"""Expert parallelism folded over tp × dp (× cp), attention-DP + EP (DEP), hybrid ZeRO sharding
(``zero_shard_size``) and LoRA fine-tuning."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim


def test_ep_folds_over_tensor_parallel_ranks():
    kw = dict(model="mixtral-8x7b", hardware="h100-sxm", batch=32, prompt_len=1024, gen_len=128)
    tp8 = perfsim.estimate(**kw, tp=8)
    ep8 = perfsim.estimate(**kw, tp=8, ep=8)  # ep exceeds dp (= 1): drawn from the TP ranks
    assert ep8["feasible"], ep8["reason"]
    # the experts are split 8 ways either way
    assert abs(ep8["memory_per_device_gib"]["weights"] - tp8["memory_per_device_gib"]["weights"]) < 1e-6
    assert tp8["breakdown"]["decode"]["communication_s"] > 0
    train = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", mode="train", tp=2, dp=8, ep=8,
                             zero=1, global_batch=64, seq_len=2048, recompute="full")
    assert train["breakdown"]["train"]["ep_communication_s"] > 0
    no_ep = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", mode="train", tp=2, dp=8,
                             zero=1, global_batch=64, seq_len=2048, recompute="full")
    assert no_ep["breakdown"]["train"]["ep_communication_s"] == 0
    assert train["memory_per_device_gib"]["weights"] < no_ep["memory_per_device_gib"]["weights"]


def test_attention_data_parallel_with_expert_parallel_inference():
    kw = dict(model="mixtral-8x7b", hardware="h100-sxm", batch=256, prompt_len=1024, gen_len=256)
    dep = perfsim.estimate(**kw, dp=8, ep=8)
    plain_dp = perfsim.estimate(**kw, dp=8)
    assert dep["feasible"], dep["reason"]
    m_dep, m_dp = dep["memory_per_device_gib"], plain_dp["memory_per_device_gib"]
    # experts shared across the group, attention replicated: far less than a full copy per device
    assert m_dep["weights"] < 0.25 * m_dp["weights"]
    params = dep["parameters"]
    assert m_dep["weights"] * 2**30 > params * 2 / 8  # but more than an even 8-way split
    # each expert sees the tokens of all 8 replicas: bigger expert GEMMs
    assert dep["tpot_s"] < perfsim.estimate(**kw, tp=8, ep=8)["tpot_s"] * 1.5


def test_ep_must_divide_experts_and_fold_group():
    r = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", tp=1, dp=3, ep=3)
    assert not r["feasible"] and "ep does not divide the experts" in r["reason"]
    r = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", tp=2, dp=1, ep=4)
    assert not r["feasible"] and "tp x dp x cp" in r["reason"]
    r = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", tp=2, ep=2)
    assert not r["feasible"] and "MoE" in r["reason"]


def _train(**kw):
    base = dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=64, zero=3,
                global_batch=256, seq_len=4096, recompute="full")
    return perfsim.estimate(**{**base, **kw})


def test_hybrid_sharding_trades_memory_for_cross_node_traffic():
    full = _train()
    hybrid = _train(zero_shard_size=8)  # shard inside each 8-GPU node, replicate across nodes
    assert full["feasible"] and hybrid["feasible"]
    mf, mh = full["memory_per_device_gib"], hybrid["memory_per_device_gib"]
    for key in ("weights", "gradients", "optimizer"):
        assert abs(mh[key] / mf[key] - 8.0) < 1e-6, key
    # on a cluster with a thin network (two 100 GbE NICs per 8-GPU node) the per-micro-batch
    # weight gathers of hybrid sharding stay on NVLink and only the gradient shard crosses nodes:
    # less time in communication. (With eight 400 Gb/s NICs per node, rings across nodes run near
    # NVLink speed, and hybrid sharding's all-reduce of the shard moves more bytes per NIC than
    # full sharding's reduce-scatter.)
    thin = {"base": "h100-sxm", "scaleout_gb_s": 3.125}
    assert _train(hardware=thin, zero_shard_size=8)["breakdown"]["train"]["dp_communication_s"] \
        < _train(hardware=thin)["breakdown"]["train"]["dp_communication_s"]
    bad = _train(zero_shard_size=7)
    assert not bad["feasible"] and "zero_shard_size" in bad["reason"]


@settings(max_examples=20)
@given(model=st.sampled_from(["llama2-7b", "llama3-8b", "mistral-7b", "gpt-j-6b"]),
       zero=st.sampled_from([1, 2, 3]), recompute=st.sampled_from(["none", "selective", "full"]))
def test_more_data_parallel_never_raises_memory_under_zero(model, zero, recompute):
    df = perfsim.sweep(model=model, hardware="h100-sxm", mode="train", dp=[1, 2, 4, 8, 16, 32], tp=2,
                       zero=zero, recompute=recompute, global_batch=64, seq_len=2048)
    for key in ("weights", "gradients", "optimizer", "model_states", "total"):
        values = df[f"memory_per_device_gib.{key}"].to_numpy()
        assert np.all(np.diff(values) <= 1e-9), key


def test_lora_needs_under_one_percent_of_the_gradient_and_optimizer_memory():
    kw = dict(model="llama2-70b", hardware="h100-sxm", mode="train", tp=8, num_devices=8, seq_len=4096,
              global_batch=8, recompute="full")
    full = perfsim.estimate(**kw)
    lora = perfsim.estimate(**kw, finetune="lora", lora_rank=16)
    mf, ml = full["memory_per_device_gib"], lora["memory_per_device_gib"]
    assert ml["gradients"] + ml["optimizer"] < 0.01 * (mf["gradients"] + mf["optimizer"])
    assert lora["step_time_s"] < full["step_time_s"]
    assert lora["feasible"] and not full["feasible"]
    # QLoRA: 4-bit frozen base weights
    qlora = perfsim.estimate(**kw, finetune="lora", weight_dtype="int4")
    assert qlora["memory_per_device_gib"]["weights"] < 0.3 * ml["weights"]


def test_capacity_factor_pads_expert_work():
    """A capacity factor pads every expert's buffer: expert GEMMs, all-to-alls and activations grow
    with it; 1.0 is dropless routing's balanced share, which dropless routing exceeds by the load of
    its busiest rank and the tile padding of its random counts per expert (a per cent or two at
    training's token counts); dense models ignore it."""
    base = dict(model="mixtral-8x7b", hardware="h100-sxm", mode="train", tp=2, pp=4, dp=8, ep=8, seq_len=4096,
                global_batch=256, zero=1)
    rows = perfsim.sweep(**base, capacity_factor=[1.0, 1.25, 2.0])
    dropless = perfsim.estimate(**base)
    assert rows["step_time_s"].iloc[0] <= dropless["step_time_s"]
    assert rows["step_time_s"].iloc[0] == pytest.approx(dropless["step_time_s"], rel=0.02)
    assert rows["step_time_s"].is_monotonic_increasing
    # the all-to-alls' bytes grow with the factor, their fixed cost per collective does not
    ep = rows["breakdown.train.ep_communication_s"]
    assert ep.iloc[2] - ep.iloc[0] == pytest.approx(4.0 * (ep.iloc[1] - ep.iloc[0]), rel=0.02)
    assert ep.iloc[2] > 1.5 * dropless["breakdown"]["train"]["ep_communication_s"]
    assert rows["memory_per_device_gib.activations"].is_monotonic_increasing
    dense = dict(model="llama2-7b", hardware="h100-sxm", mode="train", tp=1, dp=8, seq_len=2048)
    assert perfsim.estimate(**dense, capacity_factor=2.0)["step_time_s"] == pytest.approx(
        perfsim.estimate(**dense)["step_time_s"])
    with pytest.raises(perfsim.InputError):
        perfsim.estimate(**base, capacity_factor=-1.0)
