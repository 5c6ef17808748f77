"""A hardware file that names ``base:`` states only what differs from that zoo spec: the numbers it
does not write are the base's (one home for a number fitted or measured once)."""

from __future__ import annotations

import math

import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.specs import hardware as H
from perfsim.specs.hardware import load_hardware


def _differing(a, b) -> set:
    same = lambda x, y: x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))  # noqa: E731
    return {k for k in set(a.values) | set(b.values) if not same(a.values.get(k), b.values.get(k))}


@pytest.mark.parametrize("name, base, written", [
    ("h100-pim", "h100-sxm", set()),
    ("a100a-attacc", "a100a", set()),
    ("a100a", "a100-80gb", {"hbm_bandwidth_gb_s"}),
    ("a100-40gb", "a100-80gb", {"hbm_bandwidth_gb_s", "hbm_capacity_gib", "memory_max", "host_memory_gib",
                                "nvme_bandwidth_gb_s", "nvme_capacity_gib", "host_nvme_w"}),
])
def test_a_derived_zoo_part_differs_from_its_base_only_where_it_says(name, base, written):
    spec, parent = load_hardware(name), load_hardware(base)
    assert _differing(spec, parent) == written
    assert dict(spec.peak_tflops) == dict(parent.peak_tflops) and spec.name == name


def _write(tmp_path, text):
    path = tmp_path / "part.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_block_with_its_own_source_keeps_only_the_bases_sourced_numbers(tmp_path):
    path = _write(tmp_path, """name: slow-switch-h100
base: h100-sxm
description: an H100 node on a slower switch
node:
  scaleup:
    source: "a test fabric"
    name: test fabric
    bandwidth_gb_s: 100
""")
    spec, parent = load_hardware(path), load_hardware("h100-sxm")
    assert spec.values["scaleup_gb_s"] == 100
    # numbers with their own source are inherited; a plain value under the base block's source is not
    assert spec.values["scaleup_efficiency"] == parent.values["scaleup_efficiency"]
    assert parent.in_network_reduction and not spec.in_network_reduction
    assert _differing(spec, parent) == {"scaleup_gb_s"}
    fast = perfsim.collective(hardware="h100-sxm", op="all_reduce", size_bytes=2**30, num_devices=8)
    slow = perfsim.collective(hardware=path, op="all_reduce", size_bytes=2**30, num_devices=8)
    assert slow["time_s"] > fast["time_s"]


def test_an_unknown_base_is_named_with_close_matches_and_its_line(tmp_path):
    path = _write(tmp_path, "name: x\nbase: h100-sx\ndescription: y\n")
    with pytest.raises(InputError) as err:
        load_hardware(path)
    assert err.value.field == "base" and err.value.line == 2 and err.value.file == path
    assert "h100-sxm" in err.value.suggestions


def test_a_bad_number_in_the_derived_file_points_at_that_file(tmp_path):
    path = _write(tmp_path, """name: x
base: h100-sxm
description: y
device:
  efficiency:
    memory_max: {value: 2, source: "a typo"}
""")
    with pytest.raises(InputError) as err:
        load_hardware(path)
    assert err.value.file == path and "memory_max" in err.value.field


def test_a_base_chain_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "_BASE_DEPTH", 0)
    path = _write(tmp_path, "name: x\nbase: h100-sxm\ndescription: y\n")
    with pytest.raises(InputError, match="chain"):
        load_hardware(path)
