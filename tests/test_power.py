"""Power and energy: bounds, conservation, phase ordering, wall power, and the train_tokens argument."""

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st
from tiny_spec import tiny_spec

import perfsim
from perfsim.cli import cli
from perfsim.specs.hardware import load_hardware

HARDWARE = ["a100-80gb", "h100-sxm", "mi300x", "tpu-v4", "t4", "npu"]
models = st.sampled_from(["llama2-7b", "llama2-13b", "mistral-7b", "mixtral-8x7b", "opt-6.7b", "gpt-j-6b"])


@given(model=models, mode=st.sampled_from(["inference", "train"]), tp=st.sampled_from([1, 2, 4]),
       batch=st.integers(1, 128), prompt=st.integers(16, 4096), gen=st.integers(1, 512),
       recompute=st.sampled_from(["none", "full"]))
def test_power_between_idle_and_tdp(model, mode, tp, batch, prompt, gen, recompute):
    # fp16 and bf16: every device computes in one of them (the T4 has no bf16, the TPU no fp16)
    df = perfsim.sweep(model=model, hardware=HARDWARE, mode=mode, tp=tp, batch=batch, prompt_len=prompt, gen_len=gen,
                       recompute=recompute, dtype=["fp16", "bf16"], global_batch=8, seq_len=1024)
    df = df[df["feasible"]]
    # a plan too large for every device (training Mixtral on four) leaves nothing to check: draw again
    assume(len(df) > 0)
    idle = np.array([load_hardware(str(h))["idle_w"] for h in df["hardware"]])
    tdp = np.array([load_hardware(str(h))["tdp_w"] for h in df["hardware"]])
    keys = ["power_w_per_device"] + (["prefill_power_w_per_device", "decode_power_w_per_device"]
                                     if mode == "inference" else [])
    for key in keys:
        power = df[key].to_numpy()
        assert np.all(power >= idle - 1e-9) and np.all(power <= tdp + 1e-9), key
    assert np.all(df["energy_j"] > 0) and np.all(df["energy_wall_j"] > df["energy_j"])


def test_energy_is_power_times_time():
    r = perfsim.estimate(model="llama2-13b", hardware="a100-80gb", tp=2, batch=4, prompt_len=512, gen_len=64)
    assert r["energy_j"] == pytest.approx(r["power_w_per_device"] * r["e2e_latency_s"] * 2)
    phases = r["ttft_s"] * r["prefill_power_w_per_device"] + 63 * r["tpot_s"] * r["decode_power_w_per_device"]
    assert r["energy_j"] == pytest.approx(2 * phases)
    assert r["energy_j_per_token"] == pytest.approx(r["energy_j"] / (4 * 64))
    # whole servers: one node's wall power for the run's length
    whole = perfsim.estimate(model="llama2-13b", hardware="a100-80gb", tp=2, batch=4, prompt_len=512, gen_len=64,
                             wall_energy="node")
    assert whole["energy_wall_j"] == pytest.approx(whole["power_w_per_node"] * whole["e2e_latency_s"])
    # by default the run pays its 2 devices and 2/8 of the idle host, through the power supplies
    spec = load_hardware("a100-80gb")
    floor = spec["host_w"] - spec["host_cpu_w"] - spec["host_nvme_w"] - spec["host_nic_w"]
    share = (2 * r["power_w_per_device"] + floor * 2 / 8) / spec["psu_efficiency"] * r["e2e_latency_s"]
    assert r["energy_wall_j"] == pytest.approx(share) and r["plan"]["wall_energy"] == "devices"
    t = perfsim.estimate(model="llama2-7b", hardware="h100-sxm", mode="train", tp=2, dp=4, global_batch=32)
    assert t["energy_j"] == pytest.approx(t["power_w_per_device"] * t["step_time_s"] * 8)
    assert t["energy_j_per_token"] == pytest.approx(t["energy_j"] / (32 * 2048))


def test_energy_breakdown_sums_to_totals():
    for plan in (dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=16),
                 dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, dp=2, global_batch=8)):
        r = perfsim.estimate(**plan)
        e = r["breakdown"]["energy"]
        devices = sum(e[k] for k in ("idle_j", "active_j", "matrix_j", "memory_j", "link_j"))
        assert devices == pytest.approx(r["energy_j"])
        assert devices + e["host_j"] + e["unused_devices_j"] + e["psu_loss_j"] == pytest.approx(r["energy_wall_j"])
    assert e["step_j"] == pytest.approx(r["energy_j"])
    r = perfsim.estimate(model="llama2-70b", hardware="h100-sxm", tp=8, batch=16)
    assert r["breakdown"]["energy"]["prefill_j"] + r["breakdown"]["energy"]["decode_j"] == pytest.approx(r["energy_j"])


@pytest.mark.parametrize("hardware", ["a100-80gb", "h100-sxm"])
def test_prefill_draws_more_than_decode_at_batch_1(hardware):
    """Compute-bound prefill runs near the power limit; memory-bound decode far below it (Splitwise)."""
    r = perfsim.estimate(model="llama2-70b", hardware=hardware, tp=8, batch=1, prompt_len=2048, gen_len=128)
    tdp = load_hardware(hardware)["tdp_w"]
    assert r["prefill_power_w_per_device"] > 1.3 * r["decode_power_w_per_device"]
    assert r["decode_power_w_per_device"] < 0.65 * tdp  # weight streaming at full bandwidth: ~0.8 tdp on H200
    assert r["decode_power_w_per_device"] < r["power_w_per_device"] < r["prefill_power_w_per_device"]


def test_large_gemm_bound_training_reaches_the_limit_and_more_work_draws_more():
    light = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=1, prompt_len=128, gen_len=128)
    heavy = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=64, prompt_len=128, gen_len=128)
    assert heavy["decode_power_w_per_device"] > light["decode_power_w_per_device"]
    assert heavy["energy_j_per_token"] < light["energy_j_per_token"]  # batching amortises the weight reads


def test_wall_power_exceeds_the_accelerators():
    r = perfsim.estimate(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8)
    assert r["power_w_per_node"] > 8 * r["power_w_per_device"]
    spec = load_hardware("h100-sxm")
    # nothing runs on the host's CPUs, drives or NICs: the host draws its floor
    host = spec["host_w"] - spec["host_cpu_w"] - spec["host_nvme_w"] - spec["host_nic_w"]
    expected = (8 * r["power_w_per_device"] + host) / spec["psu_efficiency"]
    assert r["power_w_per_node"] == pytest.approx(expected)
    # one device of an 8-device node: the other seven idle, the wall sees them too
    one = perfsim.estimate(model="llama2-7b", hardware="h100-sxm", batch=8)
    assert one["power_w_per_node"] > one["power_w_per_device"] + 7 * spec["idle_w"]
    # two nodes: energy at the wall counts both servers
    two = perfsim.estimate(model="llama2-70b", hardware="h100-sxm", tp=8, dp=2, batch=16)
    assert two["energy_wall_j"] == pytest.approx(2 * two["power_w_per_node"] * two["e2e_latency_s"])


def test_train_tokens_sets_the_job():
    plan = dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, dp=4, global_batch=64, seq_len=4096)
    step = perfsim.estimate(**plan)
    assert "time_to_train_s" not in step
    job = perfsim.estimate(**plan, train_tokens=1e9)
    assert job["time_to_train_s"] == pytest.approx(1e9 / job["tokens_per_s"])
    assert job["energy_j"] == pytest.approx(job["power_w_per_device"] * job["time_to_train_s"] * 8)
    assert job["energy_j"] == pytest.approx(step["energy_j"] * 1e9 / (64 * 4096))
    assert job["energy_j_per_token"] == pytest.approx(step["energy_j_per_token"])
    df = perfsim.sweep(**plan, train_tokens=[1e9, 2e9])
    assert df["time_to_train_s"].iloc[1] == pytest.approx(2 * df["time_to_train_s"].iloc[0])
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train",
                                      "--tp", "8", "--train-tokens", "2e12", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"time_to_train_s"' in result.output


@pytest.mark.parametrize("bad", [0, -5, "many", float("nan"), float("inf"), True])
def test_bad_train_tokens_is_an_input_error(bad):
    with pytest.raises(perfsim.InputError, match="train_tokens"):
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", train_tokens=bad)


@pytest.mark.parametrize("text", ["0", "-1e9", "lots"])
def test_bad_train_tokens_on_the_cli_exits_2(text):
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train",
                                      "--train-tokens", text])
    assert result.exit_code == 2 and "train_tokens" in result.output and "Traceback" not in result.output


def test_infeasible_rows_have_no_power():
    r = perfsim.estimate(model="llama2-13b", hardware="npu-pim", dtype="bf16")  # no bf16 on the NPU: no time, no power
    assert r["feasible"] is False and r["power_w_per_device"] is None and r["energy_j"] is None


def test_power_spec_checks_and_derivation():
    spec = tiny_spec(power="tdp_w: 100, idle_w: 20, active_w: 20")
    assert spec["matrix_w"] == pytest.approx((100 - 20 - 20) / 0.8)
    assert spec.sources["device.power.matrix_w"].startswith("derived")
    assert spec["psu_efficiency"] == 1.0 and spec["host_w"] == 0.0
    with pytest.raises(perfsim.InputError, match="exceeds tdp_w"):
        tiny_spec(power="tdp_w: 100, idle_w: 20, active_w: 90")
    with pytest.raises(perfsim.InputError, match="psu_efficiency"):
        tiny_spec(node="devices_per_node: 1, power: {psu_efficiency: 1.2}")


def test_energy_per_phase_per_token():
    r = perfsim.estimate(model="llama2-13b", hardware="a100-80gb", tp=2, batch=4, prompt_len=512, gen_len=64)
    e = r["breakdown"]["energy"]
    assert e["prefill_j_per_token"] == pytest.approx(e["prefill_j"] / (4 * 512))
    assert e["decode_j_per_token"] == pytest.approx(e["decode_j"] / (4 * 63))
    assert e["facility_j"] == 0.0  # pue 1 by default
    one = perfsim.estimate(model="llama2-13b", hardware="a100-80gb", tp=2, batch=4, prompt_len=512, gen_len=1)
    assert one["breakdown"]["energy"]["decode_j_per_token"] is None  # no decode step


def test_serve_energy_by_iteration_kind_and_cluster_power():
    r = perfsim.serve(model="llama2-7b", hardware="a100-80gb", num_requests=40, prompt_len=256, gen_len=32,
                      arrival_rate=4.0)
    e = r["breakdown"]["energy"]
    parts = e["prefill_j"] + e["decode_j"] + e["mixed_j"] + e["between_iterations_j"]
    assert parts == pytest.approx(r["energy_j"], rel=1e-9)
    cluster = r["breakdown"]["cluster_power"]
    assert cluster["servers"] == 1 and cluster["window_s"] == 1.0
    # one device of an 8-device server: the wall sees the other seven idle and the host
    assert cluster["wall_w"]["mean"] > cluster["devices_w"]["mean"] + 7 * load_hardware("a100-80gb")["idle_w"]
    assert "power_trace" not in r


def test_cli_power_cap_and_pue():
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--batch", "8",
                                      "--power-cap-w", "250", "--pue", "1.3", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"clock_ratio"' in result.output and '"facility_j"' in result.output
    table = CliRunner().invoke(cli, ["serve", "--model", "llama2-7b", "--hardware", "a100-80gb", "--num-requests", "20",
                                     "--prompt-len", "256", "--gen-len", "16", "--power-cap-w", "250"])
    assert table.exit_code == 0, table.output
    assert "clock under the cap" in table.output and "cluster at the wall" in table.output
    for option, text in (("--power-cap-w", "-3"), ("--pue", "0.9"), ("--power-window-s", "0")):
        bad = CliRunner().invoke(cli, ["serve", "--model", "llama2-7b", "--hardware", "a100-80gb", option, text])
        assert bad.exit_code == 2 and "Traceback" not in bad.output, bad.output


def test_matrix_engines_draw_for_padded_tiles():
    """A decode GEMV pads its one row to a 16-row tile: the matrix engines execute 16x its FLOPs."""
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=1, prompt_len=512, gen_len=8)
    useful = 2 * r["parameters"]  # per generated token
    assert 14 * useful < r["breakdown"]["decode"]["flops"] < 17 * useful
    big = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=128, prompt_len=512, gen_len=8)
    assert big["breakdown"]["decode"]["flops"] < 1.2 * 128 * useful  # full tiles: little padding
