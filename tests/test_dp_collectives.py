"""Data-parallel traffic is issued as many collectives, each paying its latency.

A fully sharded engine gathers its weights unit by unit (torchtitan: one FSDP2 unit per block;
DeepSpeed ZeRO-3: one gather per weight matrix), Megatron-core reduces gradients in buckets of
max(40M, 1M x dp) parameters. On a ring across nodes each collective of ``N`` ranks costs
``(N - 1)`` steps of the scale-out latency on top of its bandwidth term, which does not depend on
how the bytes are cut: cutting the same bytes into more collectives adds exactly that latency.
"""

from __future__ import annotations

import math

import pytest

import perfsim
from perfsim.specs.hardware import load_hardware

ALPHA = load_hardware("a100-80gb")["scaleout_latency_us"] * 1e-6


def _dp(runtime, zero, dp=64):
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", tp=1, pp=1, dp=dp,
                         num_devices=dp, zero=zero, seq_len=2048, global_batch=dp, micro_batch=1,
                         dtype="bf16", runtime=runtime, recompute="none")
    return r["breakdown"]["train"]["dp_communication_s"], r


def test_zero3_gathers_pay_one_latency_per_unit():
    dp = 64
    one, r = _dp({"base": "deepspeed", "param_gathers_per_layer": 1}, 3, dp)
    eight, _ = _dp({"base": "deepspeed", "param_gathers_per_layer": 8}, 3, dp)
    layers = 32
    # two gathers per micro-batch (forward, backward); gradients go in DeepSpeed's 5e8 buckets either way
    assert eight - one == pytest.approx(2 * (8 - 1) * layers * (dp - 1) * ALPHA, rel=1e-6)


def test_megatron_reduces_gradients_in_buckets_that_grow_with_dp():
    dp = 64
    bucketed, r = _dp("megatron", 1, dp)
    whole, _ = _dp({"base": "megatron", "grad_bucket_params": 1e15}, 1, dp)
    buckets = math.ceil(r["parameters"] / max(40e6, 1e6 * dp))
    assert buckets > 1
    # ZeRO-1: a reduce-scatter of the gradients and an all-gather of the weights per bucket, both rings
    assert bucketed - whole == pytest.approx(2 * (buckets - 1) * (dp - 1) * ALPHA, rel=1e-6)


def test_more_ranks_with_the_same_bytes_cost_more_latency():
    small, _ = _dp("torchtitan", 3, 16)
    large, _ = _dp("torchtitan", 3, 256)
    assert large > small
