"""Shipped data: every model's parameter count matches its published size; every spec loads."""

import pytest
import yaml

from perfsim.graph.params import total_params
from perfsim.specs.hardware import hardware_names, load_hardware
from perfsim.specs.model import load_model, model_names
from perfsim.specs.paths import data_dir
from perfsim.specs.runtime import load_runtime, runtime_names

REQUIRED_MODELS = {"gpt3-175b", "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3.1-405b",
                   "mistral-7b", "mixtral-8x7b", "deepseek-v3", "opt-6.7b", "opt-13b", "opt-30b", "opt-175b",
                   "bloom-176b", "gpt-j-6b", "mpt-7b", "mpt-30b", "mpt-70b"}
REQUIRED_HARDWARE = {"a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "mi250x", "mi300x",
                     "tpu-v4", "v100-32gb", "t4", "npu", "pim", "a100a-attacc", "npu-pim", "h100-pim"}


def test_zoo_has_required_entries():
    assert REQUIRED_MODELS <= set(model_names())
    assert REQUIRED_HARDWARE <= set(hardware_names())


@pytest.mark.parametrize("name", model_names())
def test_parameter_count_matches_published(name):
    model = load_model(name)
    raw = yaml.safe_load((data_dir("workloads") / f"{name}.yaml").read_text())
    published = model.published_params
    assert published, f"{name} has no published_params"
    counted = float(total_params(model.columns()))
    # a size published only as a rounded name ("13B") is honoured to half its rounding step
    rounding = float(raw["published_params"].get("rounded_to", 0)) if isinstance(raw["published_params"], dict) else 0
    tolerance = max(0.01 * published, rounding / 2)
    # a published total that includes parts the spec does not model (a vision encoder) states them
    unmodelled = raw["published_params"].get("unmodelled", {}) if isinstance(raw["published_params"], dict) else {}
    counted += float(unmodelled.get("value", 0.0))
    assert abs(counted - published) <= tolerance, (counted, published)


def test_moe_active_parameters():
    mixtral = load_model("mixtral-8x7b")
    active = float(total_params(mixtral.columns(), active=True))
    assert abs(active / mixtral.published_active_params - 1) < 0.01


@pytest.mark.parametrize("name", hardware_names())
def test_hardware_loads_with_sources(name):
    spec = load_hardware(name)
    assert spec.name == name
    assert spec.sources and all(spec.sources.values())
    assert spec["hbm_bandwidth_gb_s"] > 0 and spec["hbm_capacity_gib"] > 0


@pytest.mark.parametrize("name", runtime_names())
def test_runtime_loads(name):
    assert load_runtime(name).columns()["kernels_per_layer"] > 0


@pytest.mark.parametrize("name", [n for n in hardware_names() if load_hardware(n).pim])
def test_pim_blocks_are_consistent(name):
    pim = load_hardware(name).pim
    assert pim["mode"] in ("concurrent", "blocked")
    assert pim.get("row_buffers", 2 if pim["mode"] == "concurrent" else 1) >= (2 if pim["mode"] == "concurrent" else 1)
    assert pim["internal_bandwidth_gb_s"] > 0 and pim.get("capacity_gib", 1) > 0
    if "stacks" in pim:
        # stacks x per-stack external bandwidth bounds the bank-level internal bandwidth from below
        assert pim["internal_bandwidth_gb_s"] >= pim["stacks"] * pim["stack_bandwidth_gb_s"]
    if "channels" in pim and "banks_per_channel" in pim and "macs_per_bank" in pim and "clock_ghz" in pim:
        # internal bandwidth = banks x multipliers x 2 B (one 16-bit weight per multiplier per cycle) x clock
        banks = pim["channels"] * pim["banks_per_channel"]
        assert pim["internal_bandwidth_gb_s"] == pytest.approx(banks * pim["macs_per_bank"] * 2 * pim["clock_ghz"])


@pytest.mark.parametrize("name", ["npu-pim", "a100a-attacc", "h100-pim"])
def test_pim_hosts_estimate_on_the_cli(name):
    """PIM systems run on their host device's own compute and memory until a PIM cost model exists."""
    from click.testing import CliRunner

    from perfsim.cli import cli

    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-13b", "--hardware", name])
    assert result.exit_code == 0, result.output
    dtype = "fp16" if name == "npu-pim" else "bf16"  # the NeuPIMs NPU computes in fp16 only
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-13b", "--hardware", name, "--dtype", dtype])
    assert result.exit_code == 0 and "feasible: yes" in result.output, result.output


@pytest.mark.parametrize("name", hardware_names())
def test_hardware_power_numbers_are_given_and_physical(name):
    spec = load_hardware(name)
    for key in ("device.power.idle_w", "device.power.active_w", "device.power.memory_pj_per_byte",
                "device.power.link_pj_per_byte", "node.power.host_w", "node.power.psu_efficiency"):
        assert spec.sources.get(key), key
    v = spec.values
    assert 0 < v["idle_w"] + v["active_w"] < v["tdp_w"]
    assert v["matrix_w"] > 0 and 0.8 <= v["psu_efficiency"] <= 1
    assert 1 <= v["memory_pj_per_byte"] <= 200 and 0 < v["link_pj_per_byte"] <= 100  # pJ per byte: HBM to GDDR
