"""Releases written as ``base:`` + what differs resolve to the very profile their full copies gave: every
value below is what the file held before it named its base (the pre-conversion profile, bit for bit)."""

from __future__ import annotations

import pytest

from perfsim.specs import runtime as R

# the resolved values of each profile as its full copy gave them (name and description aside)
FULL_COPIES = {
    "vllm-0.5": {  # base: vllm
        "attention": "flash", "attention_efficiency": 0.912, "custom_allreduce_efficiency_on.ampere": 0.661,
        "custom_allreduce_efficiency_on.blackwell": 0.289, "custom_allreduce_efficiency_on.hopper": 0.679,
        "custom_allreduce_latency_us_on.ampere": 5.6, "custom_allreduce_latency_us_on.blackwell": 6.24,
        "custom_allreduce_latency_us_on.hopper": 4.55, "custom_allreduce_max_bytes": 8388608.0, "dp_overlap": 0.0,
        "dropout": False, "fragmentation": 0.0, "grad_reduce_bytes": 2.0, "host_per_seq_us": 250.0,
        "kernel_launch_us": 1.5, "kernels_per_layer": 5.0, "max_num_seqs": 256.0, "mode": "inference",
        "step_overhead_ms": 5.0, "tp_overlap": 0.0},
    "vllm-0.2": {  # base: vllm-0.5
        "attention": "flash", "attention_efficiency": 0.912, "dp_overlap": 0.0, "dropout": False,
        "fragmentation": 0.0, "grad_reduce_bytes": 2.0, "host_per_seq_us": 234.0, "kernels_per_layer": 5.0,
        "max_num_seqs": 256.0, "mode": "inference", "step_overhead_ms": 3.43, "tp_overlap": 0.0},
    "deepspeed-2021": {  # base: deepspeed
        "attention": "eager", "attention_efficiency": 1.0, "dp_overlap": 0.5, "dropout": True, "fragmentation": 0.15,
        "gather_rank_copies": True, "grad_reduce_bytes": 2.0, "kernels_per_layer": 12.0, "mode": "train",
        "param_gather_reuse_params": 1e9, "param_gathers_per_layer": 4.0, "step_overhead_ms": 10.0,
        "tp_overlap": 0.0},
    "megatron-2021": {  # base: megatron
        "attention": "eager", "attention_efficiency": 1.0, "dp_overlap": 0.0, "dropout": True, "fragmentation": 0.1,
        "grad_reduce_bytes": 4.0, "kernels_per_layer": 8.0, "loss_backward_bytes_per_logit": 14.0,
        "loss_backward_kernels": 2.0, "loss_forward_bytes_per_logit": 38.0, "loss_forward_kernels": 6.0,
        "mode": "train", "step_overhead_ms": 5.0, "tp_overlap": 0.0},
    "flexgen": {  # base: hf-eager
        "attention": "eager", "attention_efficiency": 1.0, "block_schedule": True, "cpu_attention_traffic": 8.1,
        "decode_offload_prefetch": 0.0, "dequant_pass_bytes": 13.0, "dp_overlap": 0.0, "driver_staging": False,
        "dropout": False, "fragmentation": 0.15, "grad_reduce_bytes": 2.0, "hidden_store_gb_s": 4.82,
        "host_memory_pinned": True, "kernel_launch_us": 8.0, "kernels_per_layer": 12.0, "kv_cache_pinned": False,
        "kv_store_gb_s": 0.97, "mode": "inference", "nvme_relay": True, "offload_prefetch": 1.0,
        "offloaded_kv_attention": "faster", "step_overhead_ms": 5.0, "tp_overlap": 0.0},
}
#: vllm's measured decode- and prefill-attention costs, which vllm-0.5's full copy lacked
_VLLM_KERNELS = ("decode_attention_", "prefill_attention_")
BASES = {"vllm-0.5": "vllm", "vllm-0.2": "vllm-0.5", "deepspeed-2021": "deepspeed", "megatron-2021": "megatron",
         "flexgen": "hf-eager"}


@pytest.mark.parametrize("name", sorted(FULL_COPIES))
def test_a_release_on_its_base_resolves_to_its_former_full_copy(name):
    spec = R.load_runtime(name)
    values = {k: v for k, v in spec.values.items() if k not in ("name", "description")}
    if name == "vllm-0.5":  # the kernels of today's vllm, as its copy said they were: its measured attention costs
        kernels = {k: v for k, v in R.load_runtime("vllm").values.items() if k.startswith(_VLLM_KERNELS)}
        assert kernels and {k: values.pop(k) for k in kernels} == kernels
    assert values == FULL_COPIES[name]
    assert all(type(values[k]) is type(v) for k, v in FULL_COPIES[name].items())  # 1 stays 1.0, True stays True
    assert spec.name == name


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_release_names_its_base(name):
    from perfsim.specs.yamlio import load_yaml

    assert load_yaml(str(R.zoo("runtimes")[name]))["base"] == BASES[name]


def test_unsetting_a_per_model_map_drops_its_figures():
    """``cpu_attention_cache_bytes_for: null`` (a ``*_for`` map) drops the base's figures, as a ``*_on`` map's."""
    assert "cpu_attention_cache_bytes_for.bloom" in R.load_runtime("deepspeed").values
    assert not any(k.startswith("cpu_attention_cache_bytes_for") for k in R.load_runtime("deepspeed-2021").values)


def test_a_share_assumed_equal_to_flashattention_2_s_is_that_share():
    """maxtext's splash attention is assumed to reach FlashAttention-2's long-call share of the device's own
    ceiling: the figure the FA2 profiles derive, not the share of the ~86% the paper quotes for GEMMs."""
    fa2 = R.load_runtime("megatron").values["attention_efficiency"]
    assert R.load_runtime("maxtext").values["attention_efficiency"] == fa2 == 0.912


# --- figures one profile takes from another (`{same_as: NAME}`) ---

def _references():
    import re
    from pathlib import Path

    for name, path in sorted(R.zoo("runtimes").items()):
        key = None
        for line in Path(path).read_text().splitlines():
            top = re.match(r"^([a-z_0-9]+):", line)
            key = top.group(1) if top else key
            for family, other in re.findall(r"^\s+([a-z0-9]+): \{same_as: ([a-z0-9.-]+)\}", line):
                yield name, f"{key}.{family}", other
            for other in re.findall(r"^[a-z_0-9]+: \{same_as: ([a-z0-9.-]+),", line):
                yield name, key, other


@pytest.mark.parametrize("name, flat, other", list(_references()))
def test_a_referenced_figure_is_the_other_profile_s(name, flat, other):
    assert R.load_runtime(name).values[flat] == R.load_runtime(other).values[flat]


def test_flashattention_2_s_share_has_one_home():
    """Every engine that runs FlashAttention-2 before Hopper takes torchtitan's figure, not a copy of it."""
    fa2 = R.load_runtime("torchtitan").values
    for name in ("deepspeed", "megatron", "nemo", "sglang", "trt-llm", "vllm", "vllm-0.5", "vllm-0.2", "maxtext"):
        assert R.load_runtime(name).values["attention_efficiency"] == fa2["attention_efficiency"], name
    for name in ("deepspeed", "nemo-24.07", "nemo-24.03"):
        v = R.load_runtime(name).values
        assert v["attention_efficiency_on.hopper"] == fa2["attention_efficiency_on.hopper"], name
        assert v["attention_backward_ratio_on.hopper"] == fa2["attention_backward_ratio_on.hopper"], name


def _files(tmp_path, monkeypatch, **texts):
    names = dict(R.zoo("runtimes"))
    for name, text in texts.items():
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
        names[name] = tmp_path / f"{name}.yaml"
    monkeypatch.setattr(R, "zoo", lambda folder: names)
    return {name: str(names[name]) for name in texts}


@pytest.mark.parametrize("text, match", [
    ("attention_efficiency_on: {hopper: {same_as: torchtitn}}", "torchtitan"),
    ("attention_efficiency_on: {blackwell: {same_as: torchtitan}}", "torchtitan gives no attention_efficiency_on.blackwell"),
    ("dp_overlap: {same_as: two, source: x}", "comes back"),
])
def test_bad_references_are_named(text, match, tmp_path, monkeypatch):
    from perfsim.errors import InputError

    paths = _files(tmp_path, monkeypatch, one=f"name: one\nbase: nemo\ndescription: x\n{text}\n",
                   two="name: two\nbase: nemo\ndescription: y\ndp_overlap: {same_as: one, source: x}\n")
    with pytest.raises(InputError) as err:
        R._load(paths["one"])
    assert match in str(err.value) or match in (err.value.suggestions or [])
