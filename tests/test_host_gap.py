"""Host gaps inside a step (the engine's host time the device does not hide) drawn at ``host_gap_w``."""

import numpy as np
import pytest
from tiny_spec import tiny_spec

import perfsim
import perfsim.events.serving.metrics as metrics
from perfsim.cost.power import device_power
from perfsim.errors import InputError
from perfsim.specs.hardware import load_hardware

C = dict(idle_w=75.0, active_w=200.0, matrix_w=400.0, tdp_w=700.0, peak_flops=1e15, memory_j_per_byte=6e-11,
         link_j_per_byte=1e-11, host_gap_w=140.0)


def test_a_step_with_a_host_gap_by_hand():
    """A 10 ms step of which 4 ms wait on the host, moving 20 GB/s x 10 ms: 6 ms at the busy floor
    (75 + 200 W), 4 ms at 140 W, 1.2 W of memory traffic averaged over the step."""
    p = device_power(C, 0.010, 0.0, 2e8, 0.0, gap_seconds=0.004)
    expected_j = 0.006 * (75.0 + 200.0) + 0.004 * 140.0 + 6e-11 * 2e8
    assert float(p["power_w"]) * 0.010 == pytest.approx(expected_j, rel=1e-12)
    assert float(p["idle"] + p["active"]) == pytest.approx((0.006 * 275.0 + 0.004 * 140.0) / 0.010)


def test_without_a_measurement_the_gap_keeps_the_busy_floor_exactly():
    c = dict(C, host_gap_w=np.nan)
    seconds = np.array([0.01, 0.02, 0.0])
    args = (seconds, np.array([1e12, 0.0, 0.0]), np.array([1e9, 2e9, 0.0]), 0.0)
    with_gap = device_power(c, *args, gap_seconds=np.array([0.004, 0.02, 0.0]))
    without = device_power(c, *args)
    for key, value in without.items():
        np.testing.assert_array_equal(with_gap[key], value)


def test_the_gap_power_is_reached_when_the_step_is_all_host():
    p = device_power(C, np.array([0.01, 0.01]), 0.0, 0.0, 0.0, gap_seconds=np.array([0.01, 0.02]))
    np.testing.assert_allclose(p["power_w"], 140.0)


# nvidia-smi -q on the 7 A100-SXM4-80GB boards of a hung node waiting in a barrier at 1,410 MHz
# (huggingface/m4-logs 6034608c tr_141-hanging/..._num_workers_0-try3/gpu.query.all.txt), W.
A100_WAITING_W = (87.03, 85.15, 85.00, 86.67, 84.99, 85.15, 87.26)


def test_the_a100_gap_power_is_the_waiting_boards_mean():
    """Both A100 parts (the 40 GB one by base:) take the mean of the readings, which lies above
    the eighth board of that node with no kernel at 1,155 MHz (67.97 W) and under the busy floor."""
    mean = sum(A100_WAITING_W) / len(A100_WAITING_W)
    for name in ("a100-80gb", "a100-40gb"):
        spec = load_hardware(name)
        assert spec["host_gap_w"] == pytest.approx(mean, abs=0.05)
        assert spec["idle_w"] < 67.97 < spec["host_gap_w"] < spec["idle_w"] + spec["active_w"]


@pytest.mark.parametrize("hardware", ["h100-sxm", "a100-80gb"])
def test_estimate_prices_the_decode_overhead_at_the_gap_power(hardware):
    """vllm-0.5's decode step leaves the device waiting for the host (overhead_s) and between its
    kernels (launch_s): the step's power is the busy-floor power less (busy floor - host_gap_w) over
    that share of the step."""
    r = perfsim.estimate(model="llama3-8b", hardware=hardware, mode="inference", runtime="vllm-0.5", batch=8,
                         prompt_len=128, gen_len=64)
    d = r["breakdown"]["decode"]
    spec = load_hardware(hardware)
    busy = spec["idle_w"] + spec["active_w"]
    assert d["clock_ratio"] == 1.0 and d["overhead_s"] > 0
    c = dict(idle_w=spec["idle_w"], active_w=spec["active_w"], matrix_w=spec["matrix_w"], tdp_w=spec["tdp_w"],
             peak_flops=spec.peak_tflops["bf16"] * 1e12, memory_j_per_byte=spec["memory_pj_per_byte"] * 1e-12,
             link_j_per_byte=spec["link_pj_per_byte"] * 1e-12)
    floor = float(device_power(c, d["total_s"], d["flops"], d["hbm_bytes"], d["link_bytes"])["power_w"])
    share = (d["overhead_s"] + d["launch_s"]) / d["total_s"]
    assert d["launch_s"] > 0
    assert r["decode_power_w_per_device"] == pytest.approx(floor - (busy - spec["host_gap_w"]) * share, rel=1e-9)


def test_serving_energy_drops_by_the_gap_times_the_floor_difference(monkeypatch):
    """The serving simulator prices each iteration's host time (step overhead plus per-sequence host
    work) at host_gap_w: against the busy floor everywhere, the devices' energy drops by
    (busy floor - host_gap_w) x the summed host time."""
    args = dict(model="llama3-8b", hardware="h100-sxm", runtime="vllm-0.5", num_requests=24, prompt_len=64,
                gen_len=16, max_batch=8)
    gaps, durations = [], []

    def record(c, seconds, *work, gap_seconds, **clocked):
        gaps.append(np.asarray(gap_seconds))
        durations.append(np.asarray(seconds))
        return device_power(c, seconds, *work, gap_seconds=gap_seconds, **clocked)

    monkeypatch.setattr(metrics, "device_power", record)
    priced = perfsim.serve(**args)
    monkeypatch.setattr(metrics, "device_power", lambda c, *a, gap_seconds, **k: device_power(c, *a, **k))
    floor = perfsim.serve(**args)
    spec = load_hardware("h100-sxm")
    host_s = float(sum(np.sum(g) for g in gaps))
    iterations = priced["breakdown"]["iterations"]
    assert sum(len(g) for g in gaps) == iterations
    assert all(np.all((g >= 5e-3) & (g < d)) for g, d in zip(gaps, durations))  # vllm-0.5: 5 ms a step and more
    drop = (spec["idle_w"] + spec["active_w"] - spec["host_gap_w"]) * host_s
    assert floor["energy_j"] - priced["energy_j"] == pytest.approx(drop, rel=1e-9)


def test_a_cap_at_the_priced_power_leaves_the_clock():
    """The clock solve sees the host gap as the priced power does: a cap at the step's power (gaps at
    host_gap_w, below the busy floor) changes nothing, a cap 5 % under it lowers the clock."""
    plan = dict(model="llama3-8b", hardware="h100-sxm", mode="inference", runtime="vllm-0.5", batch=1,
                prompt_len=512, gen_len=2)
    free = perfsim.estimate(**plan)
    top = free["prefill_power_w_per_device"]
    assert free["breakdown"]["prefill"]["overhead_s"] > 0 and free["breakdown"]["prefill"]["clock_ratio"] == 1.0
    at = perfsim.estimate(**plan, power_cap_w=top)
    assert at["ttft_s"] == free["ttft_s"] and at["breakdown"]["prefill"]["clock_ratio"] == 1.0
    under = perfsim.estimate(**plan, power_cap_w=0.95 * top)
    assert under["breakdown"]["prefill"]["clock_ratio"] < 1.0
    assert under["prefill_power_w_per_device"] == pytest.approx(0.95 * top, rel=1e-3)


@pytest.mark.parametrize("gap", [10, 150])
def test_a_gap_power_outside_idle_and_tdp_is_an_input_error(gap):
    with pytest.raises(InputError, match="host_gap_w"):
        tiny_spec(power=f"tdp_w: 100, idle_w: 20, host_gap_w: {gap}")
    assert np.isnan(tiny_spec()["host_gap_w"])
