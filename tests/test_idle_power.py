"""Idle board power: measured where a reading is published, else the stated share of the board limit."""

from __future__ import annotations

import pytest

from perfsim.specs.hardware import load_hardware

# rocm-smi on an idle 8x MI300X node (stas00/ml-engineering 1c4d240d, compute/accelerator/amd/debug.md):
# Power (Socket) per board at SCLK 131-132 MHz, GPU% 0
MI300X_IDLE_W = (173.0, 179.0, 180.0, 178.0, 175.0, 175.0, 175.0, 176.0)


def test_mi300x_idles_at_its_published_reading():
    assert load_hardware("mi300x")["idle_w"] == pytest.approx(sum(MI300X_IDLE_W) / len(MI300X_IDLE_W), abs=0.05)


@pytest.mark.parametrize("name", ["v100-32gb", "t4", "rtx-a6000", "h100-pcie", "b200", "gb200"])
def test_parts_without_a_reading_idle_at_the_stated_share_of_their_limit(name):
    """No published idle reading found: 12.5 % of the board limit, as each spec's source says."""
    spec = load_hardware(name)
    assert spec["idle_w"] == pytest.approx(0.125 * spec["tdp_w"], rel=1e-12)
