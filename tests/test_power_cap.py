"""Power caps and DVFS: a cap never raises power nor shortens time, energy stays power x time, a
cap above the uncapped power changes nothing, a cap below the device's floor is infeasible."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import perfsim
from perfsim.analytical.power import clocked_seconds, solve_clock, voltage_ratio
from perfsim.specs.hardware import load_hardware, parse_hardware
from perfsim.specs.yamlio import loads_yaml

models = st.sampled_from(["llama2-7b", "llama2-13b", "mistral-7b", "mixtral-8x7b", "opt-6.7b"])
hardware = st.sampled_from(["a100-80gb", "h100-sxm", "v100-32gb", "mi300x", "tpu-v4"])

BERT = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
        "intermediate_size": 3072, "vocab_size": 30522, "hidden_act": "gelu", "tie_word_embeddings": True}
ZEUS = dict(model=BERT, hardware={"base": "v100-32gb", "tdp_w": 250}, num_devices=1, mode="train", dtype="fp32",
            seq_len=384, global_batch=32, micro_batch=32, runtime="hf-eager")


def _fp16(hw):
    return "fp16" if hw == "v100-32gb" else "bf16"


@given(model=models, hw=hardware, tp=st.sampled_from([1, 2, 4]), batch=st.integers(1, 64),
       prompt=st.integers(16, 2048), gen=st.integers(2, 256), fraction=st.floats(0.05, 1.2))
def test_inference_cap_never_raises_power_nor_shortens_time(model, hw, tp, batch, prompt, gen, fraction):
    tdp = load_hardware(hw)["tdp_w"]
    df = perfsim.sweep(model=model, hardware=hw, tp=tp, batch=batch, prompt_len=prompt, gen_len=gen, dtype=_fp16(hw),
                       power_cap_w=[None, fraction * tdp])
    free, capped = df.iloc[0], df.iloc[1]
    if not free["feasible"]:
        return
    if not capped["feasible"]:
        assert "power_cap_w" in capped["reason"]
        return
    tol = 1e-9
    for phase in ("prefill", "decode"):
        power = capped[f"{phase}_power_w_per_device"]
        assert power <= free[f"{phase}_power_w_per_device"] * (1 + tol)
        assert power <= fraction * tdp * (1 + tol)
        assert 0 < capped[f"breakdown.{phase}.clock_ratio"] <= 1
    assert capped["power_w_per_device"] <= free["power_w_per_device"] * (1 + tol)
    for key in ("ttft_s", "tpot_s", "e2e_latency_s"):
        assert capped[key] >= free[key] * (1 - tol)
    assert capped["throughput_tokens_per_s"] <= free["throughput_tokens_per_s"] * (1 + tol)
    # energy = mean power x time, for every device
    devices = capped["num_devices"]
    assert capped["energy_j"] == pytest.approx(capped["power_w_per_device"] * capped["e2e_latency_s"] * devices)
    phases = (capped["breakdown.prefill.total_s"] * capped["prefill_power_w_per_device"]
              + (gen - 1) * capped["breakdown.decode.total_s"] * capped["decode_power_w_per_device"])
    assert capped["energy_j"] == pytest.approx(phases * devices)


@given(model=models, hw=hardware, tp=st.sampled_from([1, 2]), dp=st.sampled_from([1, 2]),
       recompute=st.sampled_from(["none", "full"]), fraction=st.floats(0.05, 1.2))
def test_training_cap_never_raises_power_nor_shortens_time(model, hw, tp, dp, recompute, fraction):
    tdp = load_hardware(hw)["tdp_w"]
    df = perfsim.sweep(model=model, hardware=hw, mode="train", tp=tp, dp=dp, recompute=recompute, seq_len=1024,
                       global_batch=8, dtype=_fp16(hw), power_cap_w=[None, fraction * tdp])
    free, capped = df.iloc[0], df.iloc[1]
    if not (free["feasible"] and capped["feasible"]):
        return
    assert capped["power_w_per_device"] <= min(free["power_w_per_device"], fraction * tdp) * (1 + 1e-9)
    assert capped["step_time_s"] >= free["step_time_s"] * (1 - 1e-12)
    assert capped["mfu"] <= free["mfu"] * (1 + 1e-12)
    assert capped["energy_j"] == pytest.approx(capped["power_w_per_device"] * capped["step_time_s"] * tp * dp)
    # the model FLOPs do not change, the rate does
    assert capped["model_tflops_per_device"] * capped["step_time_s"] == pytest.approx(
        free["model_tflops_per_device"] * free["step_time_s"])


@pytest.mark.parametrize("plan", [
    dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=16, prompt_len=2048, gen_len=64),
    dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, dp=2, global_batch=8),
    ZEUS,
])
def test_cap_at_or_above_the_uncapped_power_changes_nothing(plan):
    free = perfsim.sweep(**plan).iloc[0]
    keys = [k for k in free.index if k.endswith("power_w_per_device")]
    top = max(free[k] for k in keys)
    for cap in (top, top * 1.5, 10_000.0):
        capped = perfsim.sweep(**plan, power_cap_w=cap).iloc[0]
        for key in free.index:
            if key == "power_cap_w" or isinstance(free[key], str) or free[key] is None:
                continue
            assert capped[key] == free[key] or (isinstance(free[key], float) and math.isnan(free[key])
                                                and math.isnan(capped[key])), key
        phases = [k for k in capped.index if k.endswith(".clock_ratio")]
        assert phases and all(capped[k] == 1.0 for k in phases)


def test_lower_caps_slow_a_compute_bound_step_and_lower_its_power():
    df = perfsim.sweep(**ZEUS, power_cap_w=[250, 200, 150, 100])
    assert df["feasible"].all()
    assert np.all(np.diff(df["step_time_s"]) > 0)
    assert np.all(np.diff(df["power_w_per_device"]) < 0)
    assert np.all(np.diff(df["breakdown.train.clock_ratio"]) < 0)
    assert np.all(df["power_w_per_device"] <= df["power_cap_w"] + 1e-6)
    # energy per step falls while the voltage falls, and the throttle is the added time
    assert df["breakdown.train.throttle_s"].iloc[0] == 0.0
    assert df["step_time_s"].iloc[2] == pytest.approx(df["step_time_s"].iloc[0] + df["breakdown.train.throttle_s"].iloc[2])


def test_memory_bound_decode_barely_slows_under_a_cap():
    plan = dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8, prompt_len=2048, gen_len=128)
    free = perfsim.estimate(**plan)
    capped = perfsim.estimate(**plan, power_cap_w=350)
    assert capped["ttft_s"] > 1.1 * free["ttft_s"]  # compute-bound prefill: the clock matters
    assert capped["tpot_s"] < 1.05 * free["tpot_s"]  # weight streaming: HBM keeps its clock
    assert capped["breakdown"]["decode"]["clock_ratio"] == 1.0  # the decode step draws less than the cap


@pytest.mark.parametrize("cap", [1.0, 50.0])
def test_cap_below_the_floor_is_infeasible_with_a_reason(cap):
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=8, power_cap_w=cap)
    assert r["feasible"] is False
    assert "power_cap_w" in r["reason"] and "lowest clock" in r["reason"]
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", batch=8, power_cap_w=[cap, 300.0])
    assert df["feasible"].tolist() == [False, True]


@pytest.mark.parametrize("bad", [0, -100, "lots", float("nan"), float("inf"), True])
def test_bad_cap_is_an_input_error(bad):
    with pytest.raises(perfsim.InputError, match="power_cap_w"):
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", power_cap_w=bad)


def test_solver_matches_its_power_model_on_arrays_and_numbers():
    rng = np.random.default_rng(0)
    n = 200
    full = rng.uniform(0.01, 1.0, n)
    compute = full * rng.uniform(0, 1, n)
    memory = (full - compute) * rng.uniform(0, 1, n)
    mem_compute = memory * rng.uniform(0, 1, n)
    idle, active = 60.0, 60.0
    clocked_w, bytes_w = rng.uniform(0, 250, n), rng.uniform(0, 80, n)
    uncapped = idle + active + clocked_w + bytes_w
    cap = uncapped * rng.uniform(0.2, 1.1, n)
    span = (full, compute, memory, mem_compute)
    clock, fits = solve_clock(cap, 0.1, 0.8, span, idle, active, clocked_w, bytes_w, uncapped)
    seconds = clocked_seconds(clock, *span)
    v = voltage_ratio(clock, 0.8)
    rate = full / seconds
    power = idle + active * clock * v * v + clocked_w * v * v * rate + bytes_w * rate
    assert np.all(power[fits] <= cap[fits] * (1 + 1e-12))
    assert np.all((clock == 1.0) == (uncapped <= cap))
    # the largest such clock: a little higher and the cap is passed
    up = np.minimum(clock * (1 + 1e-6), 1.0)
    s_up = clocked_seconds(up, *span)
    v_up = voltage_ratio(up, 0.8)
    p_up = idle + active * up * v_up**2 + clocked_w * v_up**2 * full / s_up + bytes_w * full / s_up
    binding = fits & (clock < 1.0) & (up > clock)
    assert np.all(p_up[binding] > cap[binding] * (1 - 1e-9))
    for i in range(0, n, 17):  # the same function on Python numbers gives the same clock
        one, ok = solve_clock(float(cap[i]), 0.1, 0.8, tuple(float(x[i]) for x in span), idle, active,
                              float(clocked_w[i]), float(bytes_w[i]), float(uncapped[i]))
        assert one == clock[i] and ok == fits[i]


_SPEC = """
name: x
description: test
kind: gpu
source: s
device:
  compute: {peak_tflops: {bf16: 100}}
  architecture: {compute_units: 10, clock_ghz: 1.5, ARCH}
  memory: {hbm: {capacity_gib: 10, bandwidth_gb_s: 100}}
  efficiency: {gemm_max: 0.8, memory_max: 0.8}
  power: {tdp_w: 100, idle_w: 20, POWER}
node: {devices_per_node: 1}
"""


def test_dvfs_spec_checks():
    spec = parse_hardware(loads_yaml(_SPEC.replace(", ARCH", "").replace(", POWER", ""), "x.yaml"))
    assert spec["voltage_floor"] == 1.0 and spec["min_clock_ghz"] == 0.0  # frequency scaling alone, no floor
    with pytest.raises(perfsim.InputError, match="voltage_floor"):
        parse_hardware(loads_yaml(_SPEC.replace(", ARCH", "").replace("POWER", "voltage_floor: 1.5"), "x.yaml"))
    with pytest.raises(perfsim.InputError, match="min_clock_ghz"):
        parse_hardware(loads_yaml(_SPEC.replace("ARCH", "min_clock_ghz: 2.0").replace(", POWER", ""), "x.yaml"))
    for name in ("v100-32gb", "a100-80gb", "a100-40gb", "h100-sxm"):
        spec = load_hardware(name)
        assert 0 < spec["min_clock_ghz"] < spec["clock_ghz"] and 0 < spec["voltage_floor"] < 1
