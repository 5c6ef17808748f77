"""An engine's host time run under the device's kernels (``host_overlap``, perfsim.cost.host): an
iteration takes the longer of device and host time, not their sum, and hidden host time is no gap."""

import numpy as np
import pytest

import perfsim
from perfsim.analytical.inference import forward_time
from perfsim.cost.host import hidden_decode_base, hidden_host
from perfsim.events.serving.iteration_cost import IterationCost, _lerp
from perfsim.graph.transformer import Pass
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

DECODE = Pass(tokens=32.0, seqs=32.0, q_len=1.0, kv_len=1024.0, causal=0.0, logits_tokens=32.0)


def _columns(**runtime):
    return build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "mode": "inference",
                         "runtime": {"base": "vllm", **runtime}}))


def _decode(**runtime):
    _, parts = forward_time(_columns(**runtime), DECODE)
    return float(parts["total_s"]), float(parts["overhead_s"])


def test_hidden_host_by_hand():
    """d + (1 - f) h + max(f h - d, 0) = serial - min(f h, d), serial = d + h."""
    assert hidden_host(12.0, 2.0, 1.0) == 2.0  # d 10, h 2: max(10, 2) = 10
    assert hidden_host(3.0, 2.0, 1.0) == 1.0  # d 1, h 2: max(1, 2) = 2
    assert hidden_host(3.5, 2.0, 0.5) == 1.0  # d 1.5, h 2: 1.5 + 1 + max(1 - 1.5, 0) = 2.5
    assert hidden_host(2.5, 2.0, 0.5) == 0.5  # d 0.5, h 2: 0.5 + 1 + max(1 - 0.5, 0) = 2
    got = hidden_host(np.array([12.0, 3.0, np.nan, np.inf]), 2.0, np.array([1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(got, [2.0, 1.0, 2.0, 0.0])
    zero = hidden_host(np.array([12.0, 2.0, np.nan, np.inf]), np.array([2.0, 2.0, 2.0, 2.0]), 0.0)
    assert np.all(zero == 0.0) and not np.any(np.signbit(zero))


def test_a_decode_step_takes_the_longer_of_device_and_host_time():
    """The same decode pass, its device time d read with no host time: with the host time all under
    the kernels the step is max(d, h); with half of it, d + h / 2 + max(h / 2 - d, 0)."""
    d, none = _decode(step_overhead_ms=0.0)
    assert none == 0.0 and d > 1e-3
    for h in (2e-3, 3.0 * d):
        total, exposed = _decode(step_overhead_ms=h * 1e3, host_overlap=1.0)
        assert total == pytest.approx(max(d, h), rel=1e-12)
        assert exposed == pytest.approx(max(h - d, 0.0), rel=1e-9, abs=1e-15)
        total, exposed = _decode(step_overhead_ms=h * 1e3, host_overlap=0.5)
        assert total == pytest.approx(d + h / 2 + max(h / 2 - d, 0.0), rel=1e-12)
        assert exposed == pytest.approx(h / 2 + max(h / 2 - d, 0.0), rel=1e-9)


def test_without_overlap_a_step_is_device_plus_host_bit_for_bit():
    d, _ = _decode(step_overhead_ms=0.0, host_overlap=0.0)
    for h in (2e-3, 1.0):
        total, exposed = _decode(step_overhead_ms=h * 1e3, host_overlap=0.0)
        assert exposed == h
        assert total == d + h


def test_serving_iterations_take_the_longer_of_device_and_host_time():
    """The serving simulator's iterations (decode, prefill, mixed; in the loop and vectorised) with
    the host time under the kernels: max(device, host), device read with no host time."""
    sizes = dict(max_tokens=1024, max_seqs=64, max_context=2048)
    device = IterationCost(_columns(step_overhead_ms=0.0), **sizes)
    d_dec, d_pre = device.decode_step_s(16, 700.0), device.prefill_step_s(600, 2, 300.0)
    d_mix = device.mixed_step_s(528, 17, 16, 700.0, 1, 512.0)
    assert min(d_dec, d_pre, d_mix) > 2e-3
    rows = (np.array([16.0, 528.0]), np.array([16, 17]), np.array([16, 16]), np.array([700.0, 700.0]),
            np.array([0, 1]), np.array([0.0, 512.0]))
    top = device.work(*rows)["full_s"]  # (at the top clock: the mixed one runs slower under the board's limit)
    for h in (2e-3, 1.0):
        cost = IterationCost(_columns(step_overhead_ms=h * 1e3, host_overlap=1.0), **sizes)
        # what the loop reads off the tables where no clock solve is needed (decode_lookup): where every
        # decode iteration hides its host time, each batch size's host time less it; else nothing
        base = hidden_decode_base(cost._base, cost._decode_time, cost.context.size, cost.host_s, cost.overlap)
        if h < d_dec:
            j, w = cost.context.locate(700.0)
            assert base[16] + _lerp(cost._decode_time, j + 16 * cost.context.size, w) == pytest.approx(d_dec, rel=1e-12)
        else:
            assert base is None and cost.decode_lookup() == (None, None, None, None, None)
        assert cost.decode_step_s(16, 700.0) == pytest.approx(max(d_dec, h), rel=1e-12)
        assert cost.prefill_step_s(600, 2, 300.0) == pytest.approx(max(d_pre, h), rel=1e-12)
        assert cost.mixed_step_s(528, 17, 16, 700.0, 1, 512.0) == pytest.approx(max(d_mix, h), rel=1e-12)
        many = cost.work(*rows)
        np.testing.assert_allclose(many["time_s"], [max(d_dec, h), max(d_mix, h)], rtol=1e-12)
        np.testing.assert_allclose(many["hidden_s"], np.minimum(h, top), rtol=1e-9)
        assert cost.decode_steps_s(16, np.array([700.0]))[0] == pytest.approx(max(d_dec, h), rel=1e-12)


def test_hidden_host_time_is_no_gap_in_serving_energy():
    """With every iteration's 2 ms of host time under its kernels the devices never wait for the
    host: the run's time, power and energy are those of an engine with no host time at all."""
    args = dict(model="llama3-8b", hardware="h100-sxm", num_requests=48, prompt_len=64, gen_len=24, max_batch=16)
    hidden = perfsim.serve(runtime={"base": "vllm", "host_overlap": 1.0}, **args)
    none = perfsim.serve(runtime={"base": "vllm", "host_overlap": 1.0, "step_overhead_ms": 0.0}, **args)
    serial = perfsim.serve(runtime={"base": "vllm", "host_overlap": 0.0}, **args)
    for key in ("throughput_tokens_per_s", "power_w_per_device", "energy_j_per_token"):
        assert hidden[key] == pytest.approx(none[key], rel=1e-9)
    assert serial["throughput_tokens_per_s"] < hidden["throughput_tokens_per_s"]
    assert serial["power_w_per_device"] < hidden["power_w_per_device"]  # (the waits draw host_gap_w)


def test_a_host_bound_step_waits_only_for_what_the_device_does_not_hide():
    """A decode step with more host time h than device time d, all of it overlappable, is priced
    as a serial step whose host time is h - d: the same length, the same wait, the same power."""
    kwargs = dict(model="llama3-8b", hardware="h100-sxm", mode="inference", batch=32, prompt_len=1024, gen_len=2)
    h = 0.05
    bound = perfsim.estimate(runtime={"base": "vllm", "host_overlap": 1.0, "step_overhead_ms": h * 1e3}, **kwargs)
    step = bound["breakdown"]["decode"]
    d = step["total_s"] - step["overhead_s"]
    assert step["total_s"] == pytest.approx(h, rel=1e-12) and 0.0 < d < h
    serial = perfsim.estimate(runtime={"base": "vllm", "host_overlap": 0.0, "step_overhead_ms": (h - d) * 1e3},
                              **kwargs)
    assert serial["breakdown"]["decode"]["total_s"] == pytest.approx(h, rel=1e-9)
    assert bound["decode_power_w_per_device"] == pytest.approx(serial["decode_power_w_per_device"], rel=1e-9)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_host_overlap_outside_zero_to_one_is_an_input_error(value):
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "vllm", "host_overlap": value})
    assert "host_overlap" in str(err.value)
