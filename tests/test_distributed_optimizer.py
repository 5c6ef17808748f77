"""Model states under Megatron-core's distributed optimizer, against its documented layout.

Megatron-LM README ("Distributed Optimizer"): with bf16 parameters and fp32 gradients a parameter costs
6 + 12/d bytes (bf16 weight 2, fp32 gradient buffer 4 kept whole on every rank, fp32 main weight and
Adam moments 12 sharded over the d data-parallel ranks) against 18 without it.
"""

from __future__ import annotations

import pytest

import perfsim
from perfsim.graph.params import embedding_params, head_params
from perfsim.specs.model import load_model

GIB = 2.0**30


@pytest.mark.parametrize("dp", [8, 128])
def test_bf16_distributed_optimizer_keeps_6_plus_12_over_d_bytes_per_parameter(dp):
    r = perfsim.estimate(model="gpt3-175b", hardware="a100-80gb", mode="train", tp=1, pp=8, dp=dp,
                         num_devices=8 * dp, zero=1, dtype="bf16", runtime="megatron", global_batch=8 * dp)
    c = load_model("gpt3-175b").columns()
    ends = embedding_params(c), head_params(c)
    # the busiest stage: 12 of the 96 layers and the larger end (the embedding, with tied weights)
    params = float((r["parameters"] - sum(ends)) / 8 + max(ends))
    states = r["memory_per_device_gib"]["model_states"] * GIB
    assert states == pytest.approx(params * (6.0 + 12.0 / dp), rel=1e-3)
    # the fp32 gradient buffer is not sharded: ~82 GiB per device for a TP1/PP8 GPT-3 stage
    assert r["memory_per_device_gib"]["gradients"] == pytest.approx(params * 4 / GIB, rel=1e-3)
