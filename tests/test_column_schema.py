"""The column schema (perfsim.plan.schema) matches what perfsim.plan.columns.build produces, both ways."""

from __future__ import annotations

import collections

import pytest

from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.plan.schema import BY_NAME, COLUMNS, UNITS

ALLOWED_UNITS = {"B", "B/s", "s", "us", "W", "J", "J/B", "FLOP", "FLOP/s", "GHz", "1", "bool", "enum"}

GRIDS = {
    "dense-inference": dict(model="llama2-7b", hardware="a100-80gb"),
    "moe-mla-train": dict(model=["mixtral-8x7b", "deepseek-v3"], hardware=["h100-sxm", "tpu-v4"], mode="train",
                          zero=[None, 3], recompute=["none", "selective"], schedule="interleaved",
                          virtual_stages=2, pp=2, finetune="lora", capacity_factor=1.25),
    "pim": dict(model="llama2-7b", hardware=["npu-pim", "pim", "h100-pim"], place={"decode_attention": "pim"},
                pim_mode="concurrent", sub_batches=2),
    "whatif-offload": dict(model=["llama2-7b", "mixtral-8x7b"], runtime=[None, "vllm"],
                           hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [2000, 3000], "peak_tflops": 800},
                           offload_weights="cpu", offload_kv="gpu=0.5,nvme=0.5", offload_experts="cpu",
                           expert_hit_rate=0.5, micro_batch=4, weight_dtype="int4", kv_dtype="fp8",
                           power_cap_w=500, train_tokens=1e9, num_devices=8, tp=2, pue=1.2),
}


@pytest.fixture(scope="module")
def built():
    return {name: build(expand(args)) for name, args in GRIDS.items()}


@pytest.mark.parametrize("name", GRIDS)
def test_every_built_column_is_declared(built, name):
    undeclared = sorted(set(built[name]) - set(BY_NAME))
    assert not undeclared, f"columns built but not declared in perfsim/plan/schema.py: {undeclared}"


def test_no_column_declared_twice():
    counts = collections.Counter(c.name for c in COLUMNS)
    twice = sorted(name for name, n in counts.items() if n > 1)
    assert not twice, f"declared more than once: {twice}"
    assert len(BY_NAME) == len(COLUMNS)


def test_units_allowed_and_meanings_given():
    assert set(UNITS) == ALLOWED_UNITS
    bad = sorted((c.name, c.unit) for c in COLUMNS if c.unit not in ALLOWED_UNITS)
    assert not bad, f"units outside {sorted(ALLOWED_UNITS)}: {bad}"
    empty = sorted(c.name for c in COLUMNS if not c.meaning.strip())
    assert not empty, f"columns without a meaning: {empty}"


def test_units_agree_with_name_suffixes():
    suffix_units = {"_bw": "B/s", "_w": "W", "_s": "s", "_j_per_byte": "J/B", "_flops": "FLOP/s", "_ghz": "GHz"}
    wrong = sorted((c.name, c.unit, unit) for c in COLUMNS for suffix, unit in suffix_units.items()
                   if c.name.endswith(suffix) and c.unit != unit)
    assert not wrong, f"(name, declared unit, unit its name implies): {wrong}"


def test_every_declared_column_is_built(built):
    produced = set().union(*built.values())
    stale = sorted(set(BY_NAME) - produced)
    assert not stale, f"declared in perfsim/plan/schema.py but built by none of the test grids: {stale}"
