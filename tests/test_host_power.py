"""Host CPUs, NVMe drives and NICs draw power for the time a plan keeps them busy."""

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim
from perfsim.cli import cli
from perfsim.cost.topology import nic_bytes
from perfsim.errors import InputError
from perfsim.specs.hardware import load_hardware
from tests.tiny_spec import tiny_spec

TRAIN = dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, global_batch=64, seq_len=2048)


def _host(r):
    return {k: r["breakdown"]["energy"][f"host_{k}_j"] for k in ("cpu", "nvme", "nic")}


def test_an_offloaded_optimizer_charges_the_host_cpus_for_its_adam_time():
    spec = load_hardware("a100-80gb")
    on_device = perfsim.estimate(**TRAIN, num_devices=8, dp=4)
    on_host = perfsim.estimate(**TRAIN, num_devices=8, dp=4, offload_optimizer="cpu")
    assert _host(on_device)["cpu"] == 0.0
    adam = on_host["breakdown"]["train"]["host_cpu_s"]
    assert adam > 0
    # one node, one step: the CPUs' step from idle to full load for the Adam time
    assert _host(on_host)["cpu"] == pytest.approx(spec["host_cpu_w"] * adam)
    floor = spec["host_w"] - spec["host_cpu_w"] - spec["host_nvme_w"] - spec["host_nic_w"]
    step = on_host["step_time_s"]
    assert on_host["breakdown"]["energy"]["host_j"] == pytest.approx(floor * step + spec["host_cpu_w"] * adam)


def test_nvme_energy_follows_the_bytes_the_drives_move():
    spec = load_hardware("a100-80gb")
    r = perfsim.estimate(**TRAIN, num_devices=8, dp=4, offload_optimizer="nvme")
    moved = r["breakdown"]["train"]["nvme_bytes"]  # per device
    assert moved > 0
    busy = 8 * moved / (spec["nvme_bandwidth_gb_s"] * 1e9)  # the node's drives serve its 8 devices
    assert busy <= r["step_time_s"]
    assert _host(r)["nvme"] == pytest.approx(spec["host_nvme_w"] * busy)
    # the optimizer's states on the drives: they are read and written every step
    assert _host(perfsim.estimate(**TRAIN, num_devices=8, dp=4, offload_optimizer="cpu"))["nvme"] == 0.0


def test_offloaded_kv_attention_on_the_host_cpus_draws_their_power():
    spec = load_hardware("a100-80gb")
    r = perfsim.estimate(model="opt-30b", hardware="a100-80gb", batch=64, prompt_len=512, gen_len=32,
                         offload_kv="cpu", runtime="flexgen")
    on_cpu = r["breakdown"]["decode"]["host_attention_s"] * r["breakdown"]["decode"]["steps"]
    assert on_cpu > 0
    assert _host(r)["cpu"] == pytest.approx(spec["host_cpu_w"] * on_cpu)


def test_nic_bytes_of_collectives_that_cross_nodes():
    c = {"devices_per_node": np.array(8.0)}
    size = 8e9
    # inside a node: nothing over the NICs
    assert nic_bytes(c, "all_reduce", size, 8) == 0.0
    # 4 nodes x 8 ranks: the nodes' all-reduce volume 2(4-1)/4 x S, shared by each node's 8 NICs
    assert nic_bytes(c, "all_reduce", size, 32) == pytest.approx(2 * 3 / 4 * size / 8)
    # a group strided across nodes (one rank per node): each rank carries it alone
    assert nic_bytes(c, "all_gather", size, 4, stride=8) == pytest.approx(3 / 4 * size)
    # all-to-all: the shares for the 24 off-node peers of 32
    assert nic_bytes(c, "all_to_all", size, 32) == pytest.approx(24 / 32 * size)
    assert nic_bytes(c, "send_recv", size, 2, stride=8) == size


def test_nic_power_is_charged_only_where_the_plan_crosses_nodes(tmp_path):
    text = open("hardware_specs/h100-sxm.yaml").read()
    marker = "nic_w: {value: 0,"  # the shipped spec: NIC draw independent of traffic
    assert marker in text
    path = tmp_path / "h100-nic.yaml"
    path.write_text(text.replace(marker, "nic_w: {value: 160,", 1))
    args = dict(model="llama2-7b", hardware=str(path), mode="train", tp=8, global_batch=64, seq_len=2048)
    one = perfsim.estimate(**args, num_devices=8)
    two = perfsim.estimate(**args, num_devices=16, dp=2)
    assert _host(one)["nic"] == 0.0
    sent = two["breakdown"]["train"]["nic_bytes"]
    assert sent > 0
    busy = sent / (load_hardware("h100-sxm")["scaleout_gb_s"] * 1e9)
    assert _host(two)["nic"] == pytest.approx(2 * 160 * min(busy, two["step_time_s"]))


def test_host_parts_cannot_exceed_the_host():
    with pytest.raises(InputError, match="exceeds host_w"):
        tiny_spec(node="devices_per_node: 1, power: {host_w: 100, cpu_w: 80, nvme_w: 30}")
    with pytest.raises(InputError, match="nic_w: must not be negative"):
        tiny_spec(node="devices_per_node: 1, power: {host_w: 100, nic_w: -1}")
    spec = tiny_spec(node="devices_per_node: 1, power: {host_w: 100, cpu_w: 60}")
    assert spec["host_cpu_w"] == 60 and spec["host_nic_w"] == 0


def test_the_estimate_table_names_the_host_parts_a_plan_keeps_busy():
    args = ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train", "--num-devices", "8",
            "--tp", "2", "--dp", "4", "--global-batch", "64", "--seq-len", "2048"]
    offloaded = CliRunner().invoke(cli, args + ["--offload-optimizer", "nvme"])
    assert offloaded.exit_code == 0, offloaded.output
    line = next(l for l in offloaded.output.splitlines() if l.strip().startswith("hosts"))
    assert "CPUs" in line and "NVMe" in line and "NICs" not in line
    plain = CliRunner().invoke(cli, args)
    assert not any(l.strip().startswith("hosts") for l in plain.output.splitlines())


@settings(max_examples=15, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_more_optimizer_on_the_host_never_lowers_its_cpu_energy_and_the_wall_still_adds_up(a, b):
    low, high = sorted((round(a, 2), round(b, 2)))

    def run(share):
        plan = f"gpu={1 - share:.2f},cpu={share:.2f}"
        return perfsim.estimate(**TRAIN, num_devices=8, dp=4, offload_optimizer=plan)

    r_low, r_high = run(low), run(high)
    assert _host(r_low)["cpu"] <= _host(r_high)["cpu"] * (1 + 1e-12)
    for r in (r_low, r_high):
        e = r["breakdown"]["energy"]
        assert sum(_host(r).values()) <= e["host_j"]
        devices = sum(e[f"{k}_j"] for k in ("idle", "active", "matrix", "memory", "link"))
        assert devices + e["host_j"] + e["unused_devices_j"] + e["psu_loss_j"] == pytest.approx(r["energy_wall_j"])
