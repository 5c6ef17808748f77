"""One physical model per host-link generation: GPUs on the same PCIe generation move data alike."""

from __future__ import annotations

import pytest

import perfsim
from perfsim.specs.hardware import hardware_names, load_hardware, with_base
from perfsim.specs.yamlio import load_yaml


@pytest.mark.parametrize("generation, devices", [("Gen5", ["h100-sxm", "h100-pcie", "h200", "b200"]),
                                                 ("Gen4", ["a100-80gb", "a100-40gb", "rtx-a6000", "mi210"])])
def test_same_pcie_generation_same_copy_bandwidth(generation, devices):
    rates = {d: perfsim.memcpy(d, 2**30, "cpu", "hbm")["bandwidth_gb_s"] for d in devices}
    # the same link and protocol; only the device's own copy-kernel launch differs
    assert max(rates.values()) == pytest.approx(min(rates.values()), rel=1e-4), rates
    assert max(rates.values()) < (64.0 if generation == "Gen5" else 32.0)  # protocol overhead is never free


def test_every_gpu_pcie_link_states_its_efficiency():
    """A PCIe link at its nominal rate would copy faster than any measurement shows."""
    for name in hardware_names():
        spec = load_hardware(name)
        link = with_base(load_yaml(spec.file), spec.file)["node"].get("host_link", {})  # a derived part: its base's
        if spec.kind in ("gpu", "npu") and "PCIe" in str(link.get("name", "")):
            assert spec["host_link_efficiency"] < 1.0, name
