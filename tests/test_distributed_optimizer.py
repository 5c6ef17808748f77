"""Model states under Megatron-core's distributed optimizer, against its documented layout.

Megatron-LM README ("Distributed Optimizer"): with bf16 parameters and fp32 gradients a parameter costs
6 + 12/d bytes (bf16 weight 2, fp32 gradient buffer 4 kept whole on every rank, fp32 main weight and
Adam moments 12 sharded over the d data-parallel ranks) against 18 without it; with fp16 parameters the
gradients stay fp16 and the optimizer's shard adds an fp32 gradient copy: 4 + 16/d (Megatron-core
docs/user-guide/features/dist_optimizer.md). The papers' recipe (``megatron-2021``) ran fp16 with fp32
gradients: 18 bytes per parameter without sharding (Korthikanti et al. 2022, Fig. 1).
"""

from __future__ import annotations

import pytest

import perfsim
from perfsim.graph.params import embedding_params, head_params
from perfsim.specs.model import load_model

GIB = 2.0**30


def _stage(dp, dtype, runtime="megatron", zero=1):
    r = perfsim.estimate(model="gpt3-175b", hardware="a100-80gb", mode="train", tp=1, pp=8, dp=dp,
                         num_devices=8 * dp, zero=zero, dtype=dtype, runtime=runtime, global_batch=8 * dp)
    c = load_model("gpt3-175b").columns()
    ends = embedding_params(c), head_params(c)
    # the busiest stage: 12 of the 96 layers and the larger end (the embedding, with tied weights)
    return r, float((r["parameters"] - sum(ends)) / 8 + max(ends))


@pytest.mark.parametrize("dp", [8, 128])
def test_bf16_distributed_optimizer_keeps_6_plus_12_over_d_bytes_per_parameter(dp):
    r, params = _stage(dp, "bf16")
    states = r["memory_per_device_gib"]["model_states"] * GIB
    assert states == pytest.approx(params * (6.0 + 12.0 / dp), rel=1e-3)
    # the fp32 gradient buffer is not sharded: ~82 GiB per device for a TP1/PP8 GPT-3 stage
    assert r["memory_per_device_gib"]["gradients"] == pytest.approx(params * 4 / GIB, rel=1e-3)


@pytest.mark.parametrize("dp", [8, 128])
def test_fp16_distributed_optimizer_keeps_4_plus_16_over_d_bytes_per_parameter(dp):
    r, params = _stage(dp, "fp16")
    assert r["memory_per_device_gib"]["model_states"] * GIB == pytest.approx(params * (4.0 + 16.0 / dp), rel=1e-3)
    assert r["memory_per_device_gib"]["gradients"] == pytest.approx(params * 2 / GIB, rel=1e-3)


@pytest.mark.parametrize("runtime, per_param", [("megatron", 20.0), ("megatron-2021", 18.0)])
def test_fp16_without_sharding_follows_each_recipe(runtime, per_param):
    r, params = _stage(8, "fp16", runtime=runtime, zero=0)
    assert r["memory_per_device_gib"]["model_states"] * GIB == pytest.approx(params * per_param, rel=1e-3)
