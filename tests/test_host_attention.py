"""Attention over a host-resident KV cache: the bytes the engine's host code moves per cached byte
(perfsim.cost.tiers.host_attention_traffic), the host cache's element size, model types."""

import pytest

import perfsim
from perfsim.specs.model import load_model

GIB = 2.0**30
# a small grouped-query model: 32 query heads over 4 KV heads (8 per KV head)
GQA = dict(hidden_size=4096, num_hidden_layers=8, num_attention_heads=32, num_key_value_heads=4,
           intermediate_size=11008, vocab_size=32000, hidden_act="silu")
# a small multi-head model
MHA = dict(hidden_size=4096, num_hidden_layers=8, num_attention_heads=32, intermediate_size=16384,
           vocab_size=50272, hidden_act="relu")
PLAN = dict(hardware="rtx-a6000", dtype="fp16", batch=64, prompt_len=512, gen_len=32, offload_weights="cpu",
            offload_kv="cpu")


def _host(model, runtime="deepspeed", **extra):
    r = perfsim.estimate(model=model, runtime=runtime, **PLAN, **extra)
    assert r["breakdown"]["decode"]["cpu_attention"] == 1.0
    return r["breakdown"]["decode"]["host_attention_s"], r


def test_expanded_kv_heads_are_copied_then_read():
    """repeat_kv reads the fp32 cache (4 B per element), writes 8 fresh fp32 copies (their pages
    zeroed first) and the matmuls read the copies: 4 + 3 x 8 x 4 = 100 B against 4 B read in
    place, 25 times the traffic (not 8: the copy is written, zeroed and read)."""
    expanded, _ = _host(GQA)
    in_place, _ = _host(GQA, runtime={"base": "deepspeed", "cpu_attention_expands_kv": False})
    assert expanded / in_place == pytest.approx(25.0, rel=1e-9)


def test_a_cache_of_another_type_is_cast_to_a_fresh_copy():
    """The fork's BLOOM code keeps an fp16 host cache and casts it to fresh fp32 tensors every
    step: 2 B read, 4 B written and zeroed, 4 B read, against the fp32 cache OPT reads in place:
    14 / 4 = 3.5 times the traffic, while the cache takes half the host memory."""
    bloom, rb = _host(dict(MHA, model_type="bloom"))
    opt, ro = _host(dict(MHA, model_type="opt"))
    plain, rp = _host(MHA)  # no model type: the engine's general (fp32) cache
    assert bloom / opt == pytest.approx(3.5, rel=1e-9)
    assert plain == opt
    kv = 8 * 64 * 2 * 4096 * 2 * (512 + 32) / GIB  # fp16 bytes: layers x batch x K,V x hidden x context
    assert ro["offloaded_per_device_gib"]["cpu"]["kv_cache"] == pytest.approx(2 * kv, rel=0.01)
    assert rb["offloaded_per_device_gib"]["cpu"]["kv_cache"] == pytest.approx(kv, rel=0.01)


def test_an_engine_without_cache_keys_keeps_its_own_figure():
    """FlexGen gives no cache sizes: its cast is inside its measured figure, whatever the model
    type; the host reads 8.1 bytes per cached byte at the host's streaming bandwidth."""
    flex, r = _host(dict(MHA, model_type="bloom"), runtime="flexgen")
    assert flex == _host(MHA, runtime="flexgen")[0]
    cached = 8 * 64 * 2 * 4096 * 2 * (512 + 16)  # mean context of a decode step
    assert flex == pytest.approx(cached * 8.1 / (204.8e9 * 0.81), rel=1e-6)
    assert r["offloaded_per_device_gib"]["cpu"]["kv_cache"] == pytest.approx(cached * 544 / 528 / GIB, rel=0.01)


def test_model_type_column():
    assert load_model(dict(MHA, model_type="bloom")).columns()["model_type"] == 1.0
    assert load_model(dict(MHA, model_type="gpt_neox")).columns()["model_type"] == 0.0
    assert load_model("bloom-176b").columns()["model_type"] == 1.0


@pytest.mark.parametrize("override, needle", [
    ({"cpu_attention_cache_bytes": 0}, "above 0"),
    ({"cpu_attention_compute_bytes": 16}, "at most 8"),
    ({"cpu_attention_cache_bytes_for": {"gpt2": 2}}, "gpt2"),
])
def test_bad_cache_sizes_are_input_errors(override, needle):
    with pytest.raises(perfsim.InputError) as err:
        perfsim.estimate(model=MHA, runtime={"base": "deepspeed", **override}, **PLAN)
    assert needle in str(err.value)
