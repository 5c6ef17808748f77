"""Power caps and DVFS: a cap never raises power nor shortens time, energy stays power x time, a
cap above the uncapped power changes nothing, a cap below the device's floor is infeasible."""

import math

import numpy as np
import pandas as pd
import pytest
from clock_problems import random_problems, solve_joined
from hypothesis import given
from hypothesis import strategies as st
from tiny_spec import tiny_spec

import perfsim
from perfsim.cost.clock import clocked_seconds, solve_clock, voltage_ratio
from perfsim.explore.oversubscription import nameplate_w
from perfsim.specs.hardware import load_hardware

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
            if key in ("power_cap_w", "plan.power_cap_w") or isinstance(free[key], str) or free[key] is None:
                continue
            if free[key] is pd.NA:  # a plan argument no row has (a nullable whole number)
                assert capped[key] is pd.NA, key
                continue
            assert capped[key] == free[key] or (isinstance(free[key], float) and math.isnan(free[key])
                                                and math.isnan(capped[key])), key
        phases = [k for k in capped.index if k.endswith(".clock_ratio")]
        assert phases and all(capped[k] == free[k] for k in phases)  # the board limit's clock


def test_lower_caps_slow_a_compute_bound_step_and_lower_its_power():
    df = perfsim.sweep(**ZEUS, power_cap_w=[250, 200, 150, 100])
    assert df["feasible"].all()
    assert np.all(np.diff(df["step_time_s"]) > 0)
    assert np.all(np.diff(df["power_w_per_device"]) < 0)
    assert np.all(np.diff(df["breakdown.train.clock_ratio"]) < 0)
    assert np.all(df["power_w_per_device"] <= df["power_cap_w"] + 1e-6)
    # energy per step falls while the voltage falls with the clock, then rises below the voltage floor
    # (Zeus measured the same shape on this job: 1, 0.89, 0.82, 0.90 of the 250 W energy)
    energy = df["energy_j"].to_numpy()
    assert energy[0] > energy[1] > energy[2] < energy[3]
    # the throttle is the time added to the step at the top clock
    top = (df["step_time_s"] - df["breakdown.train.throttle_s"]).to_numpy()
    assert np.all(df["breakdown.train.throttle_s"] > 0)
    assert top == pytest.approx(np.full(4, top[0]), rel=1e-12)


def test_memory_bound_decode_barely_slows_under_a_cap():
    plan = dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8, prompt_len=2048, gen_len=128)
    free = perfsim.estimate(**plan)
    capped = perfsim.estimate(**plan, power_cap_w=450)  # decode draws ~420 W, prefill ~680 W
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


def test_spans_solved_together_get_the_clocks_each_gets_alone(monkeypatch):
    """solve_clocks joins the rows two spans leave to search (each box reduced alone: rows at the top
    clock, repeated axes) into one bisection: the clocks and fits of each span solved alone, to the
    bit, with one search."""
    rng = np.random.default_rng(1)
    # the second repeats along axis 1; the cap binds on most rows, not all
    problems = random_problems(rng, (((3, 1, 40), (3, 1, 40), 0.3, 1.2), ((12, 7, 1), (12, 1, 1), 0.3, 1.2)))
    alone, searches, together = solve_joined(monkeypatch, problems)
    # one search, on the first box's binding rows and the second's first slice along axis 1
    assert searches == [((alone[0][0] < 1.0).sum() + (alone[1][0][:, 0] < 1.0).sum(),)]
    assert all(0 < (clock < 1.0).sum() < clock.size for clock, _ in together)


def test_dvfs_spec_checks():
    arch = "compute_units: 10, clock_ghz: 1.5"
    spec = tiny_spec(architecture=arch)
    assert spec["voltage_floor"] == 1.0 and spec["min_clock_ghz"] == 0.0  # frequency scaling alone, no floor
    with pytest.raises(perfsim.InputError, match="voltage_floor"):
        tiny_spec(architecture=arch, power="tdp_w: 100, idle_w: 20, voltage_floor: 1.5")
    with pytest.raises(perfsim.InputError, match="min_clock_ghz"):
        tiny_spec(architecture=arch + ", min_clock_ghz: 2.0")
    for name in ("v100-32gb", "a100-80gb", "a100-40gb", "h100-sxm"):
        spec = load_hardware(name)
        assert 0 < spec["min_clock_ghz"] < spec["clock_ghz"] and 0 < spec["voltage_floor"] < 1


SERVE = dict(model="llama2-13b", hardware="a100-80gb", tp=2, dp=2, num_requests=80, prompt_len=1024, gen_len=64,
             arrival_rate=6.0, max_batch=32, seed=1)


def test_serve_with_a_cap_above_the_power_changes_no_time():
    free = perfsim.serve(**SERVE)
    capped = perfsim.serve(**SERVE, power_cap_w=400.0)  # the TDP, which holds anyway
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_latency_s"):
        assert capped[key] == free[key], key
    assert capped["power_w_per_device"] == pytest.approx(free["power_w_per_device"], rel=1e-12)
    assert capped["breakdown"]["power_cap"] == free["breakdown"]["power_cap"]


def test_serve_with_a_binding_cap_runs_slower_and_cooler():
    free = perfsim.serve(**SERVE, power_trace=True)
    capped = perfsim.serve(**SERVE, power_cap_w=250.0, power_trace=True)
    assert capped["feasible"]
    assert capped["ttft_s"]["p99"] > free["ttft_s"]["p99"]
    assert capped["e2e_latency_s"]["mean"] >= free["e2e_latency_s"]["mean"]
    assert capped["power_w_per_device"] < free["power_w_per_device"]
    cap = capped["breakdown"]["power_cap"]
    assert 0 < cap["clock_ratio"]["prefill"] < 1 and cap["iterations_over_cap"] == 0
    for inst in capped["power_trace"]["instances"]:  # every iteration within the cap
        assert max(inst["power_w_per_device"]) <= 250.0 * (1 + 1e-9)
    assert max(max(i["power_w_per_device"]) for i in free["power_trace"]["instances"]) > 250.0
    # the same cap, estimate's way: a prefill of the same size is slowed as much
    est = perfsim.estimate(model="llama2-13b", hardware="a100-80gb", tp=2, batch=1, prompt_len=1024, gen_len=2,
                           power_cap_w=250.0)
    assert est["breakdown"]["prefill"]["clock_ratio"] < 1


def test_serve_cap_below_the_floor_is_infeasible():
    r = perfsim.serve(**SERVE, power_cap_w=60.0)
    assert r["feasible"] is False and "power_cap_w" in r["reason"]


def test_power_trace_accounts_for_the_energy():
    r = perfsim.serve(**SERVE, power_trace=True, power_window_s=0.5)
    trace, b = r["power_trace"], r["breakdown"]
    idle = load_hardware("a100-80gb")["idle_w"]
    busy = sum(sum(p * d for p, d in zip(i["power_w_per_device"], i["duration_s"], strict=True)) * i["devices"]
               for i in trace["instances"])
    assert busy + idle * b["idle_s"] * b["devices_per_instance"] == pytest.approx(r["energy_j"], rel=1e-9)
    assert busy == pytest.approx(sum(b["energy"][f"{k}_j"] for k in ("prefill", "decode", "mixed")), rel=1e-9)
    # window means: the cluster's energy over the run, and the wall adds hosts and supplies
    window = trace["window_s"]
    span = b["makespan_s"]
    lengths = np.minimum(np.asarray(trace["time_s"]) + window, span) - np.asarray(trace["time_s"])
    assert np.dot(trace["devices_w"], lengths) == pytest.approx(r["energy_j"], rel=1e-9)
    stats = b["cluster_power"]
    assert stats["devices_w"]["max"] <= stats["devices_w"]["max_instant"] + 1e-9
    assert stats["devices_w"]["p50"] <= stats["devices_w"]["p99"] <= stats["devices_w"]["max"]
    assert min(trace["wall_w"]) > max(trace["devices_w"])  # hosts and supply losses on top
    assert stats["provisioned_w"] == pytest.approx(nameplate_w("a100-80gb"))


@pytest.mark.parametrize("bad", [{"power_window_s": 0}, {"power_trace": "yes"}, {"pue": 0.5}])
def test_bad_serve_power_options(bad):
    with pytest.raises(perfsim.InputError, match=next(iter(bad))):
        perfsim.serve(**SERVE, **bad)


def test_pue_scales_the_wall_energy():
    plan = dict(model="llama2-7b", hardware="h100-sxm", batch=8)
    one, more = perfsim.estimate(**plan), perfsim.estimate(**plan, pue=1.3)
    assert more["energy_wall_j"] == pytest.approx(1.3 * one["energy_wall_j"])
    assert more["breakdown"]["energy"]["facility_j"] == pytest.approx(0.3 * one["energy_wall_j"])
    assert more["energy_j"] == one["energy_j"] and more["power_w_per_node"] == one["power_w_per_node"]
    served = perfsim.serve(**SERVE, pue=1.2)
    assert served["breakdown"]["energy"]["facility_j"] == pytest.approx(0.2 / 1.2 * served["energy_wall_j"])


def test_oversubscription_study_and_its_plot(tmp_path):
    from perfsim.explore.oversubscription import nameplate_w, plot_headroom

    study = perfsim.oversubscribe(model="llama2-7b", hardware="a100-80gb", tp=8, base_servers=2, servers=[2, 3, 4],
                                  arrival_rate=4.0, prompt_len=512, gen_len=64, requests_per_server=60,
                                  ttft_slo_s=2.0, tpot_slo_s=0.2)
    curve = study["curve"]
    assert [row["servers"] for row in curve] == [2, 3, 4]
    assert study["power_budget_w"] == pytest.approx(2 * nameplate_w("a100-80gb"))
    base = curve[0]
    assert base["power_cap_w"] is None and base["within_budget"]  # a serving load is far below nameplate
    for row in curve:
        if row["power_cap_w"] is not None:  # capped only where the uncapped peak passes the budget
            assert row["uncapped_peak_w"] > study["power_budget_w"]
        if row["within_budget"]:
            assert row["peak_w"] <= study["power_budget_w"]
    assert study["max_servers"] >= 2 and study["extra_servers"] == study["max_servers"] / 2 - 1
    path = tmp_path / "headroom.png"
    fig = plot_headroom(study, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.axes) == 2


def test_oversubscription_rejects_what_it_sets():
    with pytest.raises(perfsim.InputError, match="dp"):
        perfsim.oversubscribe(model="llama2-7b", hardware="a100-80gb", tp=8, dp=2, base_servers=1, arrival_rate=1.0,
                              ttft_slo_s=1.0, tpot_slo_s=0.1)
    with pytest.raises(perfsim.InputError, match="tp"):
        perfsim.oversubscribe(model="llama2-7b", hardware="a100-80gb", tp=3, base_servers=1, arrival_rate=1.0,
                              ttft_slo_s=1.0, tpot_slo_s=0.1)
    with pytest.raises(perfsim.InputError, match="load"):
        perfsim.oversubscribe(model="llama2-7b", hardware="a100-80gb", tp=8, base_servers=1, arrival_rate=1.0,
                              ttft_slo_s=1.0, tpot_slo_s=0.1, load="some")


def test_the_timeline_runs_at_the_capped_clock_too():
    """The simulated step follows the cap as the closed form does: every pass stretches by the
    closed form's throttle, so the two stay in the same ratio with and without a cap."""
    plan = dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, pp=4, global_batch=32)
    ratios = []
    for cap in (None, 250):
        kw = plan if cap is None else dict(plan, power_cap_w=cap)
        closed, simulated = perfsim.estimate(**kw)["step_time_s"], perfsim.timeline(**kw)["step_time_s"]
        ratios.append(simulated / closed)
        if cap is not None:
            assert simulated > perfsim.timeline(**plan)["step_time_s"] * 1.05
    assert ratios[1] == pytest.approx(ratios[0], rel=0.005)


def test_clocked_span_continuous_at_the_ridge_and_monotone_in_bandwidth():
    # an op on the roofline's ridge (compute side = memory side = t) takes t / f priced either way
    for f in (0.3, 0.7, 1.0):
        as_compute = clocked_seconds(f, 2.0, 1.0, 0.0, 0.0)
        as_memory = clocked_seconds(f, 2.0, 0.0, 1.0, 1.0)
        assert as_compute == pytest.approx(as_memory, rel=1e-15)
    # a prefill at H100's board limit whose GEMMs cross the ridge as bandwidth rises (found by
    # hypothesis: with the memory-bound ops' roofline taken together it came out 1.7 % slower)
    df = perfsim.sweep(model="mixtral-8x7b", hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [3350, 4800, 9600]},
                       tp=1, batch=1, prompt_len=597, gen_len=2)
    assert np.all(np.diff(df["ttft_s"].to_numpy()) <= 0.0)
