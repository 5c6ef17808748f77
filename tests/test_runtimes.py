"""Runtime profiles: attention kernels tuned per architecture family, and bad family names."""

import pytest

import perfsim
from perfsim.specs.hardware import parse_hardware
from perfsim.specs.paths import zoo
from perfsim.specs.yamlio import load_yaml


def _attention_s(hardware, runtime):
    r = perfsim.estimate(model="llama2-7b", hardware=hardware, mode="train", dp=8, seq_len=16384,
                         global_batch=8, runtime=runtime, recompute="selective")
    return r["breakdown"]["train"]["attention_s"]


def test_ampere_attention_kernels_run_slower_on_hopper():
    """FlashAttention-2-class kernels (NeMo 2024) use a smaller share of Hopper's peak than
    Hopper-native ones; on Ampere both profiles' kernels are alike."""
    nemo = _attention_s("h100-sxm", "nemo")
    neutral = _attention_s("h100-sxm", {"base": "nemo", "attention_efficiency_on": {"hopper": 0.85}})
    assert nemo == pytest.approx(neutral * 0.85 / 0.46, rel=0.02)
    a100 = _attention_s("a100-80gb", "nemo")
    a100_neutral = _attention_s("a100-80gb", {"base": "nemo", "attention_efficiency_on": {"hopper": 0.85}})
    assert a100 == pytest.approx(a100_neutral, rel=1e-9)


def test_bad_family_override_is_an_input_error():
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "nemo",
                                                                         "attention_efficiency_on": {"hoper": 0.5}})
    assert "hopper" in str(err.value)


def test_unknown_architecture_family_is_an_input_error():
    data = load_yaml(zoo("hardware_specs")["h100-sxm"])
    data["device"]["architecture"]["family"] = "hoper"
    with pytest.raises(perfsim.InputError) as err:
        parse_hardware(data)
    assert "hopper" in str(err.value)
