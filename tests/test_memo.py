"""What is kept between calls (parsed dicts, the columns of one configuration) is keyed by exact value
and type, read again when its spec file changes, and cannot be changed by a caller."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import perfsim
from perfsim.plan import columns
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.memo import Memo, Unkeyable, frozen
from perfsim.specs.paths import data_dir

PLAN = dict(model="llama2-7b", hardware="a100-80gb", batch=4, prompt_len=512, gen_len=64)
MODEL = dict(hidden_size=1024, num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=16,
             intermediate_size=4096, vocab_size=32000)


def test_keys_keep_types_apart():
    assert frozen(1) != frozen(1.0) != frozen(True)
    assert frozen(0.0) != frozen(-0.0)
    assert frozen({"a": [1, 2]}) == frozen({"a": [1, 2]})
    assert frozen({"a": [1, 2]}) != frozen({"a": (1, 2)})
    with pytest.raises(Unkeyable):
        frozen(np.zeros(2))


def test_a_memo_is_bounded():
    memo = Memo(2)
    for i in range(3):
        memo.put(i, i)
    assert memo.get(0) is None and memo.get(2) == 2


def test_repeated_estimates_are_identical_and_what_if_keys_are_not_shared():
    first, again = perfsim.estimate(**PLAN), perfsim.estimate(**PLAN)
    assert first == again
    faster = perfsim.estimate(**{**PLAN, "hardware": {"base": "a100-80gb", "hbm_bandwidth_gb_s": 4000}})
    assert faster["tpot_s"] < first["tpot_s"]
    assert perfsim.estimate(**PLAN) == first
    eager = perfsim.estimate(**{**PLAN, "runtime": {"base": "vllm", "attention": "eager"}})
    flash = perfsim.estimate(**{**PLAN, "runtime": {"base": "vllm", "attention": "flash"}})
    assert eager != flash


def test_a_model_dict_is_keyed_by_its_values_and_a_bad_one_still_fails():
    small = perfsim.estimate(**{**PLAN, "model": MODEL})
    bigger = perfsim.estimate(**{**PLAN, "model": {**MODEL, "num_hidden_layers": 8}})
    assert bigger["tpot_s"] > small["tpot_s"]
    assert perfsim.estimate(**{**PLAN, "model": dict(MODEL)}) == small
    for _ in range(2):
        with pytest.raises(perfsim.InputError):
            perfsim.estimate(**{**PLAN, "model": {**MODEL, "hidden_size": -1}})


def test_cached_columns_are_read_only_and_each_caller_gets_its_own_dict():
    grid = expand(PLAN)
    c = build(grid)
    c["batch"] = 1e9  # a caller's own dict
    assert build(grid)["batch"] == 4
    # one configuration's: NumPy numbers (nothing to write into) or read-only arrays; a sweep's kept spec
    # columns: read-only arrays
    values = list(build(grid).values())
    assert all(isinstance(v, (np.generic, float, int)) or not v.flags.writeable for v in values)
    arrays = [v for v in columns._spec_part(expand({**PLAN, "batch": [1, 2]})).values() if isinstance(v, np.ndarray)]
    assert arrays and not any(a.flags.writeable for a in arrays)
    with pytest.raises(ValueError):
        arrays[0][...] = 0.0


def test_an_edited_spec_file_is_read_again(tmp_path):
    path = tmp_path / "gpu.yaml"
    shutil.copy(data_dir("hardware_specs") / "a100-80gb.yaml", path)
    plan = {**PLAN, "hardware": str(path)}
    before = perfsim.estimate(**plan)
    text = path.read_text(encoding="utf-8")
    assert "bandwidth_gb_s: 2039" in text
    path.write_text(text.replace("bandwidth_gb_s: 2039", "bandwidth_gb_s: 4078", 1), encoding="utf-8")
    stamp = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))
    after = perfsim.estimate(**plan)
    assert after["tpot_s"] < before["tpot_s"]


def test_a_memo_is_shared_safely_between_threads():
    from concurrent.futures import ThreadPoolExecutor

    memo = Memo(8)

    def work(k):
        for i in range(2000):
            memo.put((k, i), i)
            memo.get((k, i - 1))
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))
    assert len(memo.entries) <= 8


def test_estimates_in_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    plans = [{**PLAN, "batch": b} for b in (1, 2, 4, 8)] * 4
    alone = [perfsim.estimate(**p) for p in plans]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda p: perfsim.estimate(**p), plans)) == alone


SWEEP = dict(model="llama2-7b", hardware="a100-80gb", batch=[1, 4, 16], prompt_len=[128, 512], gen_len=64)


def _same(a: dict, b: dict):
    assert list(a) == list(b)
    for key, value in a.items():
        assert np.array_equal(value, b[key], equal_nan=True) and np.shape(value) == np.shape(b[key]), key


def test_a_sweeps_spec_columns_kept_between_calls_are_those_built_anew(monkeypatch):
    grid = expand(SWEEP)
    first = build(grid)
    assert columns._SPEC_PART.entries  # kept
    again = build(grid)
    kept = [v for v in columns._spec_part(grid).values() if isinstance(v, np.ndarray)]
    assert kept and not any(a.flags.writeable for a in kept)
    again["hbm_bw"] = 0.0  # a caller's own dict
    assert build(grid)["hbm_bw"] == first["hbm_bw"] > 0
    monkeypatch.setattr(columns, "_spec_part", columns._spec_columns)  # nothing kept
    _same(first, build(grid))


def test_a_sweeps_spec_columns_are_not_shared_between_different_specs():
    a = build(expand(SWEEP))
    b = build(expand({**SWEEP, "hardware": "h100-sxm", "runtime": "trt-llm"}))
    assert a["hbm_bw"] != b["hbm_bw"]
    c = build(expand({**SWEEP, "dtype": "fp8"}))
    assert np.isnan(c["peak_flops"]) and not np.isnan(a["peak_flops"])  # an A100 has no fp8 rate


def test_an_edited_spec_file_is_read_again_by_a_sweep(tmp_path):
    path = tmp_path / "gpu.yaml"
    shutil.copy(data_dir("hardware_specs") / "a100-80gb.yaml", path)
    axes = {**SWEEP, "hardware": str(path)}
    before = perfsim.sweep(**axes)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("bandwidth_gb_s: 2039", "bandwidth_gb_s: 4078", 1), encoding="utf-8")
    stamp = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))
    after = perfsim.sweep(**axes)
    assert (after["tpot_s"] < before["tpot_s"]).all()


def test_one_call_reads_each_spec_file_once(tmp_path, monkeypatch):
    """An estimate names its hardware file to several parts of the plan; within the call it is listed and
    stated as often as one load does (then the spec read first is reused), and the next call looks again."""
    from perfsim.specs.hardware import load_hardware

    path = tmp_path / "gpu.yaml"
    shutil.copy(data_dir("hardware_specs") / "a100-80gb.yaml", path)
    plan = {**PLAN, "hardware": str(path)}
    first = perfsim.estimate(**plan)
    seen, stat = [], os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: seen.append(os.fspath(p)) or stat(p, *a, **k))
    load_hardware(str(path))
    one = seen.count(str(path))
    assert one >= 1
    for _ in range(2):
        seen.clear()
        assert perfsim.estimate(**plan) == first
        assert seen.count(str(path)) == one


def test_the_columns_of_one_configuration_hold_numbers_with_the_values_and_types_built():
    grid = expand(dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8, runtime="vllm"))
    built, kept = columns._build(grid), build(grid)
    assert kept.keys() == built.keys()
    assert any(v.__class__ is np.ndarray and not v.ndim for v in built.values())  # (what is turned to numbers)
    for key, value in kept.items():
        assert not isinstance(value, np.ndarray) or value.ndim, key
        assert type(value) is type(built[key][()] if isinstance(built[key], np.ndarray) else built[key]), key
        assert np.array_equal(value, built[key], equal_nan=True), key


@pytest.mark.parametrize("plan", [PLAN, dict(PLAN, tp=2, pp_layers=None), dict(model="llama2-7b", hardware="a100-80gb",
                                                                               mode="train", recompute="full")])
def test_the_row_key_of_arguments_at_their_defaults_is_the_one_made_value_by_value(plan):
    from perfsim.plan.arguments import ARGUMENTS
    from perfsim.plan.grid import DEFAULT_AXES

    grid = expand({k: v for k, v in plan.items() if v is not None})
    given = {k for k, v in plan.items() if v is not None} | {"dtype"}
    for name, axis in grid.axes.items():  # every argument not given holds its shared default axis
        assert (axis is DEFAULT_AXES[name]) == (name not in given)
        assert axis.values == [ARGUMENTS[name][1]] or name in given
    made = tuple((name, frozen(axis.values[0])) for name, axis in grid.axes.items())
    assert columns._row_key(grid) == made
    assert DEFAULT_AXES["batch"].values == [ARGUMENTS["batch"][1]]  # (no grid wrote its default axes)


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, num_devices=8, runtime="vllm"),
                                  dict(model="deepseek-v3", hardware="h200", tp=8, num_devices=8, dtype="fp8"),
                                  dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, num_devices=8)])
def test_a_configuration_with_other_lengths_reuses_its_columns_with_the_values_and_types_built(plan, monkeypatch):
    """A one-row grid that differs from one built before only in its batch and lengths takes that one's columns
    (no build) with its own lengths: the columns, their types and their order as built for it alone."""
    columns._ONE_ROW.clear()
    columns._CONFIGURATION.clear()
    build(expand({**plan, "batch": 3, "seq_len": 1024}))
    calls = []
    real = columns._build
    monkeypatch.setattr(columns, "_build", lambda grid: calls.append(1) or real(grid))
    for lengths in (dict(batch=5), dict(batch=7, prompt_len=300, gen_len=2), dict(seq_len=4096), {}):
        grid = expand({**plan, **lengths})
        kept, built = build(grid), columns._numbers(real(grid))
        assert list(kept) == list(built)
        for key, value in kept.items():
            assert type(value) is type(built[key]) and np.array_equal(value, built[key], equal_nan=True), key
            assert not isinstance(value, np.ndarray) or not value.flags.writeable, key
    assert calls == []  # (every one from the first's columns)
    other = build(expand({**plan, "batch": 5, "tp": 1, "num_devices": 1}))  # another configuration: built
    assert calls == [1] and other["tp"] == 1
