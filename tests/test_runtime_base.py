"""An engine profile that names ``base:`` writes only the keys its release changed; the rest are the
base profile's, so a fix to one reaches every release built on it."""

from __future__ import annotations

import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.specs import runtime as R


def _differing(a, b) -> set:
    return {k for k in set(a.values) | set(b.values) if a.values.get(k) != b.values.get(k)}


def test_a_release_differs_from_its_base_only_in_the_keys_it_writes():
    nemo, r2407, r2403 = (R.load_runtime(n) for n in ("nemo", "nemo-24.07", "nemo-24.03"))
    # 24.07 gives Hopper its own figure and unsets Blackwell's (`blackwell: null`), which falls back to the plain value
    assert _differing(r2407, nemo) == {"name", "description", "attention_efficiency_on.hopper",
                                       "attention_efficiency_on.blackwell", "attention_backward_ratio_on.hopper",
                                       "attention_backward_ratio_on.blackwell"}
    assert "attention_efficiency_on.blackwell" not in r2407.values
    assert _differing(r2403, r2407) == {"name", "description", "loss_forward_bytes_per_logit",
                                        "loss_backward_bytes_per_logit", "loss_forward_kernels",
                                        "loss_backward_kernels"}


def _files(tmp_path, monkeypatch, **texts):
    names = dict(R.zoo("runtimes"))
    for name, text in texts.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        names[name] = path
    monkeypatch.setattr(R, "zoo", lambda folder: names)
    return {name: str(names[name]) for name in texts}


def test_an_unknown_base_is_named_with_close_matches_and_its_line(tmp_path, monkeypatch):
    paths = _files(tmp_path, monkeypatch, mine="name: mine\nbase: nemmo\ndescription: x\n")
    with pytest.raises(InputError) as err:
        R._load(paths["mine"])
    assert err.value.field == "base" and err.value.line == 2 and "nemo" in err.value.suggestions


def test_a_base_chain_that_comes_back_is_refused(tmp_path, monkeypatch):
    paths = _files(tmp_path, monkeypatch, one="name: one\nbase: two\ndescription: x\n",
                   two="name: two\nbase: one\ndescription: y\n")
    with pytest.raises(InputError, match="comes back"):
        R._load(paths["one"])


def test_a_derived_file_keeps_the_checks_of_its_keys(tmp_path, monkeypatch):
    paths = _files(tmp_path, monkeypatch, mine="""name: mine
base: nemo
description: x
dp_overlap: {value: 1.5, source: "a typo"}
""")
    with pytest.raises(InputError) as err:
        R._load(paths["mine"])
    assert err.value.field == "dp_overlap"


def test_null_drops_the_bases_setting_so_the_default_holds():
    """NVIDIA's MLPerf v4.1 harness runs TensorRT-LLM engines without CUDA graphs and with 16-bit context
    attention: its profile unsets trt-llm's graph launch cost (the device's applies) and its fp8 prefill map."""
    trt, harness = R.load_runtime("trt-llm"), R.load_runtime("trt-llm-mlperf-v4.1")
    assert _differing(harness, trt) == {"name", "description", "kernel_launch_us",
                                        "prefill_attention_fp8_efficiency_on.hopper",
                                        "prefill_attention_fp8_efficiency_on.blackwell"}
    assert harness.columns()["runtime_launch_us"] == -1.0  # the device's launch cost
    plan = dict(model="llama2-7b", hardware="h100-sxm", dtype="fp8", kv_dtype="fp8", batch=8, prompt_len=2048, gen_len=1)
    graphs, eager = (perfsim.estimate(**plan, runtime=r)["breakdown"]["prefill"] for r in ("trt-llm", "trt-llm-mlperf-v4.1"))
    assert eager["launch_s"] > graphs["launch_s"]  # 4 us per kernel on h100-sxm against 1.5 from a graph
    assert eager["attention_s"] > graphs["attention_s"]  # the context attention at the 16-bit rate


def test_a_key_that_cannot_be_unset_is_named(tmp_path, monkeypatch):
    paths = _files(tmp_path, monkeypatch, mine="name: mine\nbase: nemo\ndescription: x\nattention: null\n")
    with pytest.raises(InputError) as err:
        R._load(paths["mine"])
    assert err.value.field == "attention" and err.value.line == 4


# --- one rule for a derived file and an inline what-if dict (perfsim.specs.runtime._overlay) ---

_SAME_RULE = [
    # a map merges figure by figure: Blackwell's stays nemo's
    ("nemo", {"attention_efficiency_on": {"hopper": 0.5}}),
    # a figure unset falls back to the plain value; the others stay
    ("nemo", {"attention_efficiency_on": {"blackwell": None}, "dp_overlap": 0.5}),
    # a whole map unset, a plain key unset (the device's launch cost)
    ("trt-llm", {"prefill_attention_fp8_efficiency_on": None, "kernel_launch_us": None}),
    # a limit given outright holds on every device; one unset drops its per-family map too
    ("vllm", {"max_num_seqs": 64, "max_num_batched_tokens": None}),
    ("deepspeed", {"cpu_attention_cache_bytes_for": None, "host_memory_pinned": True}),
]


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else repr(value)


@pytest.mark.parametrize("base, keys", _SAME_RULE)
def test_an_inline_what_if_resolves_as_a_derived_file_would(base, keys, tmp_path, monkeypatch):
    text = f"name: mine\nbase: {base}\ndescription: x\nsource: a test\n" + "".join(
        f"{k}: {_yaml(v)}\n" for k, v in keys.items())
    paths = _files(tmp_path, monkeypatch, mine=text)
    derived, inline = R._load(paths["mine"]), R.load_runtime({"base": base, **keys})
    strip = ("name", "description")
    assert {k: v for k, v in derived.values.items() if k not in strip} == \
        {k: v for k, v in inline.values.items() if k not in strip}
    assert {k: repr(v) for k, v in derived.columns().items()} == {k: repr(v) for k, v in inline.columns().items()}


def test_a_map_merges_and_a_figure_set_to_null_falls_back_to_the_plain_value():
    nemo = R.load_runtime("nemo")
    merged = R.load_runtime({"base": "nemo", "attention_efficiency_on": {"hopper": 0.5}})
    assert merged.values["attention_efficiency_on.hopper"] == 0.5
    assert merged.values["attention_efficiency_on.blackwell"] == nemo.values["attention_efficiency_on.blackwell"]
    dropped = R.load_runtime({"base": "nemo", "attention_efficiency_on": {"blackwell": None}}).columns()
    assert dropped["attention_eff_blackwell"] == nemo.values["attention_efficiency"] != nemo.columns()["attention_eff_blackwell"]
    assert dropped["attention_eff_hopper"] == nemo.columns()["attention_eff_hopper"]


def test_an_inline_null_unsets_as_a_file_s_does():
    """``{base: trt-llm, kernel_launch_us: null}`` is the MLPerf harness's launch cost: the device's."""
    inline = R.load_runtime({"base": "trt-llm", "kernel_launch_us": None})
    assert inline.columns()["runtime_launch_us"] == R.load_runtime("trt-llm-mlperf-v4.1").columns()["runtime_launch_us"] == -1.0


@pytest.mark.parametrize("keys, field", [
    ({"attention_efficiency_on": {"hoper": None}}, "runtime.attention_efficiency_on.hoper"),
    ({"attention": None}, "runtime.attention"),
    ({"mode": "train"}, "runtime.mode"),
])
def test_bad_inline_keys_are_named(keys, field):
    with pytest.raises(InputError) as err:
        perfsim.estimate(model="llama2-7b", hardware="h100-sxm", runtime={"base": "nemo", **keys})
    assert err.value.field == field


def test_a_family_unset_in_a_file_is_checked(tmp_path, monkeypatch):
    paths = _files(tmp_path, monkeypatch, mine="name: mine\nbase: nemo\ndescription: x\n"
                                              "attention_efficiency_on:\n  hoper: null\n")
    with pytest.raises(InputError) as err:
        R._load(paths["mine"])
    assert err.value.field == "attention_efficiency_on.hoper" and err.value.line == 5
