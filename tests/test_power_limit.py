"""The board limit as a power cap, and the active floor at load (perfsim/cost/power.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim
from perfsim.cost.power import board_cap, cap_span, device_power
from perfsim.specs.hardware import load_hardware

#: a device for hand arithmetic: 400 W limit, 60 W idle, 60 W floor, 400 W of matrix engines at full rate
DEVICE = dict(idle_w=60.0, active_w=60.0, matrix_w=400.0, tdp_w=400.0, peak_flops=1e15, memory_j_per_byte=0.0,
              link_j_per_byte=0.0, voltage_floor=0.5, min_clock_ghz=0.2, clock_ghz=2.0)


def test_a_compute_bound_span_over_the_limit_runs_at_the_clock_hand_arithmetic_gives():
    # compute-bound at full rate: at clock f the work per second is f, the voltage f (above the floor), so
    # P(f) = idle + (active + matrix) f^3 = tdp  ->  f = ((400 - 60) / 460) ** (1/3)
    c = dict(DEVICE, power_cap_w=np.array([np.nan, 300.0, 1000.0]))
    clock, seconds, fits = cap_span(c, 1.0, 1.0, 0.0, 0.0, 1e15, 0.0, 0.0)
    f_tdp = (340.0 / 460.0) ** (1.0 / 3.0)
    f_300 = (240.0 / 460.0) ** (1.0 / 3.0)
    assert clock == pytest.approx([f_tdp, f_300, f_tdp], rel=1e-6)  # a cap above TDP: TDP binds
    assert seconds == pytest.approx(1.0 / np.array([f_tdp, f_300, f_tdp]), rel=1e-6)
    assert fits.all()
    power = device_power(c, seconds, 1e15, 0.0, 0.0, clock=clock, full_seconds=1.0)["power_w"]
    assert power == pytest.approx([400.0, 300.0, 400.0], rel=1e-6)


def test_a_span_below_the_limit_is_unchanged():
    c = dict(DEVICE, power_cap_w=np.array([np.nan]))
    clock, seconds, _ = cap_span(c, 2.0, 1.0, 1.0, 0.0, 0.5e15, 0.0, 0.0)  # 60 + 60 + 100 W
    assert clock[0] == 1.0 and seconds[0] == 2.0
    assert device_power(c, seconds, 0.5e15, 0.0, 0.0, clock=clock, full_seconds=2.0)["power_w"][0] == \
        device_power(c, 2.0, 0.5e15, 0.0, 0.0)["power_w"]


def test_only_gpus_are_clock_limited():
    gpu, tpu = (perfsim.plan.columns.hardware_columns(load_hardware(h)) for h in ("h100-sxm", "tpu-v5e"))
    for c in (gpu, tpu):
        c["power_cap_w"] = np.nan
    assert board_cap(gpu) == 700.0 and board_cap(tpu) == np.inf
    gpu["power_cap_w"] = 500.0
    assert board_cap(gpu) == 500.0


@settings(max_examples=12, deadline=None)
@given(batch=st.sampled_from([1, 64, 512]), prompt=st.sampled_from([128, 2048]), mode=st.sampled_from(["inference", "train"]))
def test_more_board_power_is_never_slower_and_power_stays_within_it(batch, prompt, mode):
    tdps = [500.0, 700.0, 1000.0, 1400.0]
    plan = (dict(mode="train", global_batch=max(batch // 64, 1) * 8, seq_len=prompt) if mode == "train"
            else dict(batch=batch, prompt_len=prompt, gen_len=32))
    rows = [perfsim.estimate(model="llama3-8b", hardware={"base": "h200", "tdp_w": t}, dtype="fp8", **plan)
            for t in tdps]
    if not all(r["feasible"] for r in rows):
        return
    key = "step_time_s" if mode == "train" else "e2e_latency_s"
    times = [r[key] for r in rows]
    assert all(a >= b * (1 - 1e-12) for a, b in zip(times, times[1:], strict=False))
    for r, t in zip(rows, tdps, strict=True):
        assert r["power_w_per_device"] <= t * (1 + 1e-9)
        if mode != "train":
            assert max(r["prefill_power_w_per_device"], r["decode_power_w_per_device"]) <= t * (1 + 1e-9)


def test_serving_iterations_stay_within_the_board_limit():
    plan = dict(model="llama3-8b", hardware="h100-sxm", dtype="fp8", max_batch=256, num_requests=300, prompt_len=2048,
                gen_len=64, power_trace=True)
    low = perfsim.serve(**plan, power_cap_w=450)
    free = perfsim.serve(**plan)
    for r, limit in ((low, 450.0), (free, 700.0)):
        worst = max(max(i["power_w_per_device"]) for i in r["power_trace"]["instances"])
        assert worst <= limit * (1 + 1e-9)
    assert low["breakdown"]["makespan_s"] >= free["breakdown"]["makespan_s"]


@pytest.mark.parametrize(("hardware", "measured"), [("a100-80gb", 250.0)])
def test_the_active_floor_reproduces_splitwise_token_phase_power(hardware, measured):
    # the calibration a100-80gb states (h100-sxm's floor comes from measured kernels, tests/test_power_floor.py): Splitwise's decode of Llama2-70B and BLOOM-176B on 8 GPUs (TP8),
    # batch 8-32, prompts of 1,024 and 1,500 tokens, averages the measured token-phase power
    powers = []
    for model in ("llama2-70b", "bloom-176b"):
        for batch in (8, 16, 32):
            for prompt in (1024, 1500):
                r = perfsim.estimate(model=model, hardware=hardware, num_devices=8, tp=8, batch=batch,
                                     prompt_len=prompt, gen_len=256, dtype="fp16")
                if r["feasible"]:
                    powers.append(r["decode_power_w_per_device"])
    assert len(powers) >= 10
    assert np.mean(powers) == pytest.approx(measured, abs=2.0)


def test_a_gemm_at_the_ceiling_holds_the_limit_at_its_sustained_clock():
    # a100-80gb: a large GEMM sustains 1,305 of 1,410 MHz at 400 W; f V^2 = f^3 above the 0.8 voltage floor
    h = load_hardware("a100-80gb")
    f = 1.305 / 1.41
    assert h["matrix_w"] == pytest.approx(((400.0 - h["idle_w"]) / f**3 - h["active_w"]) / h["gemm_max"], rel=1e-12)
    c = perfsim.plan.columns.hardware_columns(h, dtype="bf16")
    c["power_cap_w"] = np.nan
    flops = h["gemm_max"] * c["peak_flops"]  # one second of GEMM at the ceiling, no memory traffic
    clock, seconds, _ = cap_span(c, 1.0, 1.0, 0.0, 0.0, flops, 0.0, 0.0)
    assert clock == pytest.approx(f, rel=1e-6) and seconds == pytest.approx(1.0 / f, rel=1e-6)
    # a spec without the key: the GEMM draws the limit at the top clock and runs there
    c100 = perfsim.plan.columns.hardware_columns(load_hardware("v100-32gb"), dtype="fp16")
    c100["power_cap_w"] = np.nan
    assert cap_span(c100, 1.0, 1.0, 0.0, 0.0, load_hardware("v100-32gb")["gemm_max"] * c100["peak_flops"],
                    0.0, 0.0)[0] == pytest.approx(1.0)


def test_decode_iterations_below_the_bound_skip_the_clock_solve():
    """A decode iteration reads only the token terms up to the batch limit, the LM head and the
    decode attention tables; where no such entry reaches the limit at the top clock, no decode
    iteration does (an iteration draws at most its hungriest entry), and the skip changes no length."""
    from perfsim.events.serving.iteration_cost import IterationCost
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    free = []
    for model, hardware, tp in (("llama2-70b", "h100-sxm", 8), ("llama2-7b", "a100-80gb", 1)):
        c = build(expand({"model": model, "hardware": hardware, "tp": tp, "mode": "inference", "batch": 1,
                          "prompt_len": 1, "gen_len": 1}))
        cost = IterationCost(c, max_tokens=4096, max_seqs=256, max_context=4097)
        free.append(cost._decode_free)
        rng = np.random.default_rng(2)
        n = rng.integers(1, 257, 300)
        context = rng.uniform(1, 4096, 300)
        w = cost.work(n.astype(float), n, n, context, np.zeros_like(n), np.zeros(300))
        p, full = cost.power_columns, w.get("full_s", w["time_s"])
        power = (p["idle_w"] + p["active_w"] + p["matrix_w"] * w["flops"] / full / p["peak_flops"]
                 + p["memory_j_per_byte"] * w["hbm_bytes"] / full + p["link_j_per_byte"] * w["link_bytes"] / full)
        last = min(cost.tokens.locate(256.0)[0] + 1, cost.tokens.size - 1)
        assert np.all(power <= cost._peak_w(((0, last + 1), (1, None), (2, None))) * (1 + 1e-12))
        skipped = [cost.decode_step_s(int(k), float(x)) for k, x in zip(n[:30], context[:30], strict=True)]
        cost._decode_free = False
        solved = [cost.decode_step_s(int(k), float(x)) for k, x in zip(n[:30], context[:30], strict=True)]
        assert skipped == pytest.approx(solved, rel=1e-12)
    # eight H100s share a 70B model's decode and stay under 700 W; a 7B decode on one A100 may not
    assert free == [True, False]


def test_iterations_the_entry_bound_clears_keep_their_length_and_stay_within_the_limit():
    """A prefill or mixed iteration whose table entries, each with the neighbour it is interpolated
    with, stay within the cap needs no power check (:meth:`IterationCost._below_cap`): its power at
    the top clock is within the cap, and its length is the one the full check gives."""
    from perfsim.events.serving.iteration_cost import IterationCost
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    # under a 625 W cap (the board's 700 W clears every one of these iterations)
    c = build(expand({"model": "llama2-70b", "hardware": "h100-sxm", "tp": 8, "mode": "inference", "batch": 1,
                      "prompt_len": 1, "gen_len": 1, "power_cap_w": 625}))
    cost = IterationCost(c, max_tokens=8192, max_seqs=64, max_context=4097)
    rng = np.random.default_rng(3)
    n_pre, n_dec = rng.integers(1, 9, 200), rng.integers(0, 56, 200)
    prompt = rng.uniform(1, 4096, 200)
    tokens = np.minimum(n_pre * prompt + n_dec, 8192.0)
    context = np.where(n_dec > 0, rng.uniform(1, 4096, 200), 0.0)
    cleared, lengths = [], []
    for args in zip(tokens.tolist(), (n_pre + n_dec).tolist(), n_dec.tolist(), context.tolist(), n_pre.tolist(),
                    prompt.tolist(), strict=True):
        cleared.append(cost._below_cap(cost._at(*args)))
        lengths.append(cost.mixed_step_s(*args))
    w = cost.work(tokens, n_pre + n_dec, n_dec, context, n_pre, prompt)
    p, full = cost.power_columns, w["full_s"]
    power = (p["idle_w"] + p["active_w"] + p["matrix_w"] * w["flops"] / full / p["peak_flops"]
             + p["memory_j_per_byte"] * w["hbm_bytes"] / full + p["link_j_per_byte"] * w["link_bytes"] / full)
    cleared = np.array(cleared)
    assert 0 < cleared.sum() < len(cleared)  # both kinds occur here
    assert np.all(power[cleared] <= cost.cap)
    cost._below_cap = lambda at: False  # every iteration checked in full
    iterations = zip(tokens.tolist(), (n_pre + n_dec).tolist(), n_dec.tolist(), context.tolist(), n_pre.tolist(),
                     prompt.tolist(), strict=True)
    checked = [cost.mixed_step_s(*args) for args in iterations]
    assert lengths == checked
