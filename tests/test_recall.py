"""The result arrays of the last few estimates are kept for a call with the same arguments: the same result,
a dict of its own for each caller, made anew where a spec file changed or the arguments differ at all."""

from __future__ import annotations

import os
import shutil

import pytest

import perfsim
from perfsim.plan import recall
from perfsim.specs.paths import data_dir

PLAN = dict(model="llama2-70b", hardware="h100-sxm", num_devices=8, tp=8, batch=8)


@pytest.fixture
def kept(monkeypatch):
    """Results kept, none yet; the calls that make an estimate (rather than recall one) counted."""
    from perfsim import api

    monkeypatch.setattr(recall, "ON", True)
    monkeypatch.setattr(recall, "_RESULTS", recall.Memo(recall.RECALLED))
    made = []
    evaluate = api.evaluate
    monkeypatch.setattr(api, "evaluate", lambda plan: made.append(dict(plan)) or evaluate(plan))
    return made


def test_a_repeated_estimate_is_recalled_as_a_copy_the_caller_may_change(kept):
    first = perfsim.estimate(**PLAN)
    first["tpot_s"] = -1.0
    first["plan"]["tp"] = 99
    first["breakdown"]["decode"].clear()
    again = perfsim.estimate(**PLAN)
    assert len(kept) == 1  # (made once)
    recall.ON = False
    made = perfsim.estimate(**PLAN)
    assert again == made and again is not made
    assert perfsim.estimate(**PLAN) == made  # (nothing a caller did reached the kept one)


@pytest.mark.parametrize("other", [dict(batch=9), dict(batch=8.0), dict(tp=4, num_devices=4), dict(gen_len=2),
                                   dict(runtime="vllm"), dict(hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": 4000})])
def test_arguments_that_differ_in_value_or_type_are_estimated(kept, other):
    first = perfsim.estimate(**PLAN)
    second = perfsim.estimate(**{**PLAN, **other})
    assert len(kept) == 2
    assert (second == first) == (other == dict(batch=8.0))  # (8.0 and 8: the same estimate, made twice)


def test_a_loop_over_more_calls_than_are_kept_makes_every_estimate(kept):
    for _ in range(2):
        for batch in range(1, recall.RECALLED + 2):
            perfsim.estimate(**{**PLAN, "batch": batch})
    assert len(kept) == 2 * (recall.RECALLED + 1)
    perfsim.estimate(**{**PLAN, "batch": recall.RECALLED + 1})  # (the last: kept)
    assert len(kept) == 2 * (recall.RECALLED + 1)


def test_an_edited_spec_file_makes_the_estimate_again(kept, tmp_path):
    path = tmp_path / "gpu.yaml"
    shutil.copy(data_dir("hardware_specs") / "a100-80gb.yaml", path)
    plan = dict(model="llama2-7b", hardware=str(path), batch=4)
    before = perfsim.estimate(**plan)
    assert perfsim.estimate(**plan) == before and len(kept) == 1
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("bandwidth_gb_s: 2039", "bandwidth_gb_s: 4078", 1), encoding="utf-8")
    stamp = os.stat(path).st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))
    after = perfsim.estimate(**plan)
    assert len(kept) == 2 and after["tpot_s"] < before["tpot_s"]
    path.unlink()  # gone: the estimate says so, as it would have without a result kept
    with pytest.raises(perfsim.InputError):
        perfsim.estimate(**plan)


def test_errors_and_traces_are_not_kept(kept, tmp_path):
    for _ in range(2):
        with pytest.raises(perfsim.InputError):
            perfsim.estimate(**{**PLAN, "dtype": "fp7"})
    trace = dict(model="llama2-7b", hardware="a100-80gb", mode="train", global_batch=8)
    for _ in range(2):
        perfsim.estimate(**trace, trace_out=str(tmp_path / "step.json"))
    assert not recall._RESULTS.entries
