"""A number a part assumes from another zoo part is written ``{same_as: NAME}``: it is that part's value at
the same key, whatever that part later fits or measures, so the assumption cannot fall behind it."""

from __future__ import annotations

import pytest

from perfsim.errors import InputError
from perfsim.specs import hardware as H
from perfsim.specs import same_as
from perfsim.specs.hardware import load_hardware
from perfsim.specs.paths import zoo
from perfsim.specs.yamlio import load_yaml


def _references():
    """(part, dotted key, other part) of every ``same_as`` number in the zoo."""
    def walk(node, keys):
        for key, value in node.items():
            if isinstance(value, dict) and "same_as" in value:
                yield ".".join((*keys, key)), value["same_as"]
            elif isinstance(value, dict):
                yield from walk(value, (*keys, key))
    for name, path in sorted(zoo("hardware_specs").items()):
        for dotted, other in walk(load_yaml(str(path)), ()):
            yield name, dotted, other


def _number(spec, dotted):
    if ".gemm_max_" in dotted:
        return spec.gemm_max(dotted.rsplit("gemm_max_", 1)[1])
    return spec.values[H._FIELDS[dotted]]


@pytest.mark.parametrize("name, dotted, other", list(_references()))
def test_a_referenced_number_is_the_other_part_s(name, dotted, other):
    assert _number(load_hardware(name), dotted) == _number(load_hardware(other), dotted)


def test_the_zoo_s_assumed_figures_follow_their_parts():
    """h100-pcie takes h100-sxm's fitted memory and fp8 GEMM ceilings (the same GH100 die), mi210 takes mi300x's
    streaming share through mi250x, and the v5 TPUs take tpu-v4's measured power."""
    pcie, sxm = load_hardware("h100-pcie"), load_hardware("h100-sxm")
    assert pcie["memory_max"] == sxm["memory_max"] == 0.896
    assert pcie.gemm_max("fp8") == sxm.gemm_max("fp8") == 0.665
    assert load_hardware("mi210")["memory_max"] == load_hardware("mi300x")["memory_max"]
    assert load_hardware("tpu-v5e")["idle_w"] == load_hardware("tpu-v4")["idle_w"] == 90


def _write(tmp_path, text, name="part"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


_PART = """name: x
base: h100-sxm
description: y
device:
  efficiency:
    memory_max: {same_as: %s, source: "a test"}
"""


def test_a_reference_in_a_file_of_one_s_own(tmp_path):
    spec = load_hardware(_write(tmp_path, _PART % "a100-40gb"))
    assert spec["memory_max"] == load_hardware("a100-40gb")["memory_max"] != load_hardware("h100-sxm")["memory_max"]


def test_an_unknown_part_is_named_with_close_matches_and_its_line(tmp_path):
    path = _write(tmp_path, _PART % "a100-40g")
    with pytest.raises(InputError) as err:
        load_hardware(path)
    assert err.value.line == 6 and err.value.file == path and "a100-40gb" in err.value.suggestions


def test_a_part_without_that_number_is_an_input_error(tmp_path):
    path = _write(tmp_path, _PART.replace("memory_max", "attention_max") % "a100-40gb")
    with pytest.raises(InputError, match="a100-40gb gives no number at device.efficiency.attention_max"):
        load_hardware(path)


def test_a_key_beside_same_as_is_refused(tmp_path):
    path = _write(tmp_path, _PART.replace('source: "a test"', "value: 0.5") % "a100-40gb")
    with pytest.raises(InputError, match="unknown key 'value' beside same_as"):
        load_hardware(path)


def test_a_chain_of_references_is_followed_and_bounded(tmp_path, monkeypatch):
    """mi210 takes mi250x's figure, which is mi300x's: a part referencing mi210 gets mi300x's; a chain
    longer than the bound (a cycle) is refused."""
    assert load_hardware(_write(tmp_path, _PART % "mi210"))["memory_max"] == load_hardware("mi300x")["memory_max"]
    monkeypatch.setattr(same_as, "_DEPTH", 1)
    with pytest.raises(InputError, match="chain"):
        load_hardware(_write(tmp_path, _PART % "mi210", name="other"))
