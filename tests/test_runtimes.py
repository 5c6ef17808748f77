"""Runtime profiles: attention kernels tuned per architecture family, and bad family names."""

import numpy as np
import pytest

import perfsim
from perfsim.specs.hardware import parse_hardware
from perfsim.specs.paths import zoo
from perfsim.specs.yamlio import load_yaml


def _attention_s(hardware, runtime):
    r = perfsim.estimate(model="llama2-7b", hardware=hardware, mode="train", dp=8, seq_len=16384,
                         global_batch=8, runtime=runtime, recompute="selective")
    return r["breakdown"]["train"]["attention_s"]


def _passes(hardware, runtime):
    r = perfsim.estimate(model="llama2-7b", hardware=hardware, mode="train", dp=8, seq_len=16384,
                         global_batch=8, runtime=runtime, recompute="none")["breakdown"]["train"]
    return r["forward_s"], r["attention_s"]


def test_family_attention_figures_apply_on_their_family_only():
    """NeMo's cuDNN figures for Hopper (today's, megatron's): with the forward and backward both at 0.85
    of the GEMM ceiling the attention takes 0.85 / 0.878 (forward) and 0.85 / (0.878 x 0.906) (backward) as
    long at 16K tokens (compute-bound); on Ampere the Hopper figures change nothing."""
    neutral_rt = {"base": "nemo", "attention_efficiency_on": {"hopper": 0.85},
                  "attention_backward_ratio_on": {"hopper": 1.0}}
    nemo, neutral = _attention_s("h100-sxm", "nemo"), _attention_s("h100-sxm", neutral_rt)
    # the neutral profile's backward does 2.5x the forward's FLOPs at the same rate
    expected = neutral / 3.5 * (0.85 / 0.878 + 2.5 * 0.85 / (0.878 * 0.906))
    assert nemo == pytest.approx(expected, rel=0.02)
    assert _attention_s("a100-80gb", "nemo") == pytest.approx(_attention_s("a100-80gb", neutral_rt), rel=1e-12)


def test_backward_ratio_slows_the_backward_attention_alone():
    """Halving the ratio doubles the (compute-bound) backward attention, a quarter quadruples it:
    the extra time of the second is three times the first's; the forward pass does not move."""
    (f1, a1), (f2, a2), (f4, a4) = (_passes("h100-sxm", {"base": "nemo", "attention_backward_ratio_on": {"hopper": r}})
                                    for r in (1.0, 0.5, 0.25))
    assert a2 > a1
    assert a4 - a1 == pytest.approx(3.0 * (a2 - a1), rel=1e-6)
    assert f1 == pytest.approx(f2, rel=1e-12) and f1 == pytest.approx(f4, rel=1e-12)
    # the scalar applies on a family the profile gives no figure for
    plain = _passes("a100-80gb", "nemo")[1]
    halved = _passes("a100-80gb", {"base": "nemo", "attention_backward_ratio": 0.5})[1]
    assert halved > plain


def test_eager_attention_backward_runs_at_the_forward_rate():
    """Eager attention's backward is batched GEMMs: a flash kernel's backward ratio does not apply."""
    eager = {"base": "nemo", "attention": "eager"}
    assert _attention_s("h100-sxm", {**eager, "attention_backward_ratio_on": {"hopper": 0.3}}) == \
        pytest.approx(_attention_s("h100-sxm", eager), rel=1e-12)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_backward_ratio_out_of_range_is_an_input_error(ratio):
    for key, value in (("attention_backward_ratio", ratio), ("attention_backward_ratio_on", {"hopper": ratio})):
        with pytest.raises(perfsim.InputError) as err:
            perfsim.estimate(model="llama2-7b", hardware="h100-sxm", mode="train",
                             runtime={"base": "nemo", key: value})
        assert "attention_backward_ratio" in str(err.value)


def test_bad_family_override_is_an_input_error():
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "nemo",
                                                                         "attention_efficiency_on": {"hoper": 0.5}})
    assert "hopper" in str(err.value)


def test_unknown_architecture_family_is_an_input_error():
    data = load_yaml(zoo("hardware_specs")["h100-sxm"])
    data["device"]["architecture"]["family"] = "hoper"
    with pytest.raises(perfsim.InputError) as err:
        parse_hardware(data)
    assert "hopper" in str(err.value)


# -- host time per sequence (engines whose host work is not hidden behind the device) -----------

#: vllm with its host work serial (async scheduling off: v0.13 and earlier, or ``--no-async-scheduling``)
SERIAL_VLLM = {"base": "vllm", "host_overlap": 0.0}

def _decode_step(runtime, n, context=512.0, uncapped=False):
    from perfsim.events.serving.iteration_cost import IterationCost
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand
    c = build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "inference", "runtime": runtime}))
    if uncapped:  # no board power limit: an iteration over it would trade host time for a higher clock
        c["tdp_w"] = np.full_like(np.asarray(c["tdp_w"], dtype=float), np.inf)
    cost = IterationCost(c, max_tokens=512, max_seqs=256, max_context=1024)
    return cost.decode_step_s(n, context), cost.prefill_step_s(300, 2, 150.0), cost


@pytest.mark.parametrize("n", [1, 17, 256])
def test_host_time_per_sequence_adds_to_every_iteration(n):
    """Each sequence an iteration serves adds the profile's host time, on top of the same device time
    (where the board's power limit does not bind: under it the host time lowers the iteration's mean
    power, and its GEMMs may run at a higher clock)."""
    base, base_pre, _ = _decode_step(SERIAL_VLLM, n, uncapped=True)
    slow, slow_pre, _ = _decode_step({**SERIAL_VLLM, "host_per_seq_us": 100.0}, n, uncapped=True)
    assert slow - base == pytest.approx(100e-6 * n, rel=1e-9)
    assert slow_pre - base_pre == pytest.approx(100e-6 * 2, rel=1e-9)


def test_host_time_per_sequence_in_the_work_of_many_iterations():
    """The vectorised pricing of recorded iterations agrees with the loop's, host time included."""
    import numpy as np
    t, _, cost = _decode_step({"base": "vllm", "host_per_seq_us": 100.0}, 40)
    many = cost.work(np.array([40.0]), np.array([40]), np.array([40]), np.array([512.0]), np.array([0]),
                     np.array([0.0]))
    assert float(many["time_s"][0]) == pytest.approx(t, rel=1e-9)


def test_host_time_per_sequence_in_estimate_decode():
    """``estimate`` prices the same host time: the decode step grows by it times the batch."""
    kwargs = dict(model="llama3-8b", hardware="h100-sxm", batch=64, prompt_len=128, gen_len=64)
    fast = perfsim.estimate(runtime=SERIAL_VLLM, **kwargs)
    slow = perfsim.estimate(runtime={**SERIAL_VLLM, "host_per_seq_us": 50.0}, **kwargs)
    assert slow["tpot_s"] - fast["tpot_s"] == pytest.approx(50e-6 * 64, rel=1e-6)


def test_older_vllm_leaves_the_device_waiting_at_lower_power():
    """vLLM before 0.6 (the same kernels, host work exposed): longer iterations, lower mean device
    power (the waits draw only the idle and active floors), more energy per token."""
    kwargs = dict(model="llama3-8b", hardware="h100-sxm", max_batch=64, num_requests=200, prompt_len=100,
                  gen_len=200)
    new = perfsim.serve(runtime="vllm", **kwargs)
    old = perfsim.serve(runtime="vllm-0.5", **kwargs)
    assert old["tpot_s"]["mean"] > 1.5 * new["tpot_s"]["mean"]
    assert old["power_w_per_device"] < new["power_w_per_device"]
    assert old["energy_j_per_token"] > new["energy_j_per_token"]
    idle_and_active = 75.0 + 113.0  # h100-sxm idle_w + active_w
    assert old["power_w_per_device"] > idle_and_active


def test_negative_host_time_per_sequence_is_an_input_error():
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "vllm", "host_per_seq_us": -1.0})
    assert "host_per_seq_us" in str(err.value)


def test_sglang_hides_its_host_work():
    """SGLang's scheduler runs one batch ahead: with the same kernels as vllm (its decode attention
    given vllm's fixed costs), its decode step is serial vllm's less vllm's host time per step, and
    today's vllm's (async scheduling: the same host time under the kernels)."""
    same_kernels = {"base": "sglang", "decode_attention_fixed_us_on": {"hopper": 10.9},
                    "decode_attention_unit_us_on": {"hopper": 3.98}}
    sglang, _, _ = _decode_step(same_kernels, 64)
    vllm, _, cost = _decode_step(SERIAL_VLLM, 64)
    assert vllm - sglang == pytest.approx(cost.overhead_s, rel=1e-9)
    assert cost.overhead_s == pytest.approx(2e-3)
    assert _decode_step("vllm", 64)[0] == pytest.approx(sglang, rel=1e-9)


# -- the engine's serving limits ---------------------------------------------------------------

def _limits(**kwargs):
    args = dict(model="llama3-8b", num_requests=4, prompt_len=32, gen_len=4)
    args.update(kwargs)
    plan = perfsim.serve(**args)["plan"]
    return plan["max_batch"], plan["max_batched_tokens"], plan["chunk_size"], plan["max_prefill_tokens"]


def test_serving_limits_default_to_the_engine_s_for_the_device():
    """vLLM's defaults depend on the device (arg_utils.py): 1024 sequences and 8192 tokens on
    H100-class GPUs, 256 and 2048 on A100s."""
    assert _limits(hardware="h100-sxm", runtime="vllm") == (1024, 8192, 8192, 8192)
    assert _limits(hardware="a100-80gb", runtime="vllm") == (256, 2048, 2048, 2048)


def test_serving_limits_given_win_over_the_engine_s():
    assert _limits(hardware="h100-sxm", runtime={"base": "vllm", "max_num_seqs": 64})[0] == 64
    assert _limits(hardware="h100-sxm", runtime="vllm", max_batch=32)[0] == 32
    assert _limits(hardware="h100-sxm", runtime="vllm", max_batched_tokens=1024)[1:] == (1024, 1024, 1024)
    assert _limits(hardware="h100-sxm", runtime="vllm", max_batched_tokens=1024, chunk_size=256)[2:] == (256, 1024)


def test_an_engine_without_limits_keeps_the_simulator_s_defaults():
    from perfsim.events.serving.checks import DEFAULT_CHUNK, DEFAULT_MAX_BATCH, DEFAULT_PREFILL_TOKENS
    assert _limits(hardware="h100-sxm", runtime="sglang") == (DEFAULT_MAX_BATCH, None, DEFAULT_CHUNK,
                                                             DEFAULT_PREFILL_TOKENS)


def test_the_engine_s_sequence_limit_caps_the_running_batch():
    """An offline run of many short requests never batches more sequences than the engine allows."""
    r = perfsim.serve(model="llama3-8b", hardware="h100-sxm", runtime={"base": "vllm", "max_num_seqs": 24},
                      num_requests=200, prompt_len=32, gen_len=16)
    assert r["breakdown"]["mean_batch_size"] <= 24


@pytest.mark.parametrize("value", [0, 1.5, -3])
def test_bad_serving_limits_are_input_errors(value):
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "vllm", "max_num_seqs": value})
    assert "max_num_seqs" in str(err.value)


def test_vllm_0_5_reproduces_the_v0_6_0_gains():
    """The vLLM v0.6.0 blog measured 2.7x the throughput of v0.5.3 for Llama-3-8B on one H100 and
    1.8x for Llama-3-70B on four H100s (500 ShareGPT prompts, max_num_seqs 256); the two profiles
    differ only in exposed host time, which has to explain both (v0.6.0 ran its ~2 ms per step serial:
    async scheduling came with vLLM PR #19970 in 2025, on by default from v0.14.0)."""
    lengths = dict(prompt_len={"dist": "lognormal", "mean": 220, "sigma": 0.8, "max": 2048},
                   gen_len={"dist": "lognormal", "mean": 200, "sigma": 0.8, "max": 2048})
    for model, tp, published in (("llama3-8b", 1, 2.7), ("llama3-70b", 4, 1.8)):
        kwargs = dict(model=model, hardware="h100-sxm", tp=tp, num_devices=tp, max_batch=256, num_requests=500,
                      **lengths)
        new = perfsim.serve(runtime=SERIAL_VLLM, **kwargs)["throughput_tokens_per_s"]
        old = perfsim.serve(runtime="vllm-0.5", **kwargs)["throughput_tokens_per_s"]
        assert new / old == pytest.approx(published, rel=0.1)
