"""ZeRO-3 weight gathers: re-gathers under full recompute, and list collectives that copy every
rank's chunk (DeepSpeed of 2021, ``runtimes/deepspeed-2021.yaml``)."""

from __future__ import annotations

import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.specs.hardware import load_hardware

LAUNCH = load_hardware("a100-80gb")["kernel_launch_us"] * 1e-6


def _train(runtime, zero=3, dp=64, recompute="full", global_batch=None, micro_batch=1):
    return perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", tp=1, pp=1, dp=dp, num_devices=dp,
                            zero=zero, seq_len=2048, global_batch=global_batch or dp * micro_batch,
                            micro_batch=micro_batch, dtype="bf16", runtime=runtime, recompute=recompute)


def _comm(r):
    return r["breakdown"]["train"]["dp_communication_s"]


def test_recompute_regathers_the_units_released_before_their_backward():
    kept = {"base": "deepspeed", "param_gather_reuse_params": 0}
    base = _comm(_train(kept))
    # one gather pass: a ZeRO-3 micro-batch's traffic (two passes and the reduce-scatter) less ZeRO-2's
    # (the reduce-scatter), each the growth of the step's traffic with a second micro-batch
    def per_micro(zero):
        return _comm(_train(kept, zero=zero, global_batch=128)) - _comm(_train(kept, zero=zero))
    gather = (per_micro(3) - per_micro(2)) / 2.0
    assert gather > 0
    r = _train({"base": "deepspeed", "param_gather_reuse_params": 1})
    layer = r["parameters"] / 32.0  # the layer's weights as the engine counts them (embeddings spread over the layers)
    assert _comm(r) - base == pytest.approx(gather * (1.0 - 1.0 / (2.0 * layer)), rel=1e-6)
    # a distance of one layer: the later half of the layer stays gathered
    half = _train({"base": "deepspeed", "param_gather_reuse_params": layer})
    assert _comm(half) - base == pytest.approx(0.5 * gather, rel=1e-6)
    # beyond two layers' weights everything is kept; without full recompute there is nothing to re-gather
    assert _comm(_train({"base": "deepspeed", "param_gather_reuse_params": 2.0 * layer})) == pytest.approx(base, rel=1e-12)
    assert _comm(_train({"base": "deepspeed", "param_gather_reuse_params": 1}, recompute="none")) == pytest.approx(
        _comm(_train(kept, recompute="none")), rel=1e-12)


def test_list_all_gathers_launch_one_copy_per_rank_and_the_device_waits():
    dp = 64
    plain = {"base": "deepspeed", "param_gather_reuse_params": 0}
    copies = {**plain, "gather_rank_copies": True}
    a, b = _train(plain, dp=dp, recompute="none"), _train(copies, dp=dp, recompute="none")
    gathers = 2 * 4 * 32  # two gathers (forward, backward) of four units per layer
    extra = gathers * dp * LAUNCH
    assert _comm(b) - _comm(a) == pytest.approx(extra, rel=1e-9)
    exposed = b["breakdown"]["train"]["dp_exposed_s"] - a["breakdown"]["train"]["dp_exposed_s"]
    assert exposed == pytest.approx(extra, rel=1e-9)
    # the step grows by it (less the power cap's throttling, which a longer step at lower power needs less of)
    throttle = b["breakdown"]["train"].get("throttle_s", 0.0) - a["breakdown"]["train"].get("throttle_s", 0.0)
    assert b["step_time_s"] - a["step_time_s"] == pytest.approx(extra + throttle, rel=1e-6)


@pytest.mark.parametrize("runtime", ["deepspeed", "deepspeed-2021", "torchtitan"])
def test_more_data_parallel_ranks_at_a_fixed_batch_never_raise_the_rate(runtime):
    rates = [_train(runtime, dp=dp, global_batch=512, micro_batch=512 // dp)["hardware_tflops_per_device"]
             for dp in (64, 128, 256, 512)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(rates, rates[1:])), rates


@pytest.mark.parametrize("key, value", [("param_gather_reuse_params", -1), ("gather_rank_copies", 3)])
def test_bad_gather_keys_are_input_errors(key, value):
    with pytest.raises(InputError):
        _train({"base": "deepspeed", key: value})
