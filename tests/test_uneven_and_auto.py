"""Uneven pipeline splits and ``recompute: auto``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim
from perfsim.graph.params import balanced_split

TRAIN = dict(model="llama2-7b", hardware="a100-80gb", mode="train", tp=1, dp=1, seq_len=2048, global_batch=16,
             micro_batch=1, recompute="full")


def test_balanced_split_sums_and_differs_by_at_most_one():
    for layers in (1, 7, 32, 61, 126):
        for pp in range(1, min(layers, 20) + 1):
            counts = balanced_split(layers, pp)
            assert sum(counts) == layers and len(counts) == pp
            assert max(counts) - min(counts) <= 1 and max(counts) == -(-layers // pp)


def test_a_pipeline_that_does_not_divide_the_layers_runs():
    r = perfsim.estimate(model="llama3.1-405b", hardware="h100-sxm", mode="train", num_devices=16384, tp=8, pp=16,
                         seq_len=8192, global_batch=2048)
    assert r["feasible"], r["reason"]
    assert r["plan"]["pp_layers"] == balanced_split(126, 16) and max(r["plan"]["pp_layers"]) == 8


def test_pp_layers_that_do_not_match_the_plan_are_infeasible():
    few = perfsim.estimate(**TRAIN, pp=4, num_devices=4, pp_layers=[8, 8, 8])
    assert not few["feasible"] and "pp_layers" in few["reason"]
    off = perfsim.estimate(**TRAIN, pp=4, num_devices=4, pp_layers=[8, 8, 8, 9])
    assert not off["feasible"] and "add up" in off["reason"]
    with pytest.raises(perfsim.InputError):
        perfsim.estimate(**TRAIN, pp=2, num_devices=2, pp_layers=[16, -1])


@settings(max_examples=15, deadline=None)
@given(pp=st.sampled_from([2, 3, 4, 5, 6]), data=st.data())
def test_an_uneven_split_never_beats_the_balanced_one(pp, data):
    """32 layers over pp stages: any split is at least as slow and as full as the balanced one, in the
    closed form and on the simulated timeline (its fullest stage holds at least ceil(32 / pp))."""
    cuts = sorted(data.draw(st.lists(st.integers(1, 31), min_size=pp - 1, max_size=pp - 1, unique=True)))
    split = [b - a for a, b in zip([0, *cuts], [*cuts, 32], strict=True)]
    kw = dict(TRAIN, pp=pp, num_devices=pp)
    balanced, uneven = perfsim.estimate(**kw), perfsim.estimate(**kw, pp_layers=split)
    assert uneven["step_time_s"] >= balanced["step_time_s"] * (1 - 1e-9)
    assert uneven["memory_per_device_gib"]["total"] >= balanced["memory_per_device_gib"]["total"] * (1 - 1e-9)
    t_bal, t_unev = perfsim.timeline(**kw), perfsim.timeline(**kw, pp_layers=split)
    assert t_bal["feasible"]
    if t_unev["feasible"]:  # a split too full to fit has no timeline: never a better one
        assert t_unev["step_time_s"] >= t_bal["step_time_s"] * (1 - 1e-9)


LIGHTER = {"selective": "none", "full": "selective"}


@settings(max_examples=20, deadline=None)
@given(model=st.sampled_from(["llama2-7b", "llama2-13b", "mistral-7b"]), tp=st.sampled_from([1, 2, 4]),
       seq_len=st.sampled_from([2048, 4096, 8192]), micro_batch=st.sampled_from([1, 2, 4, 8]))
def test_auto_picks_the_least_recomputation_that_fits(model, tp, seq_len, micro_batch):
    kw = dict(model=model, hardware="a100-40gb", mode="train", tp=tp, dp=8 // tp, num_devices=8, seq_len=seq_len,
              micro_batch=micro_batch, global_batch=8 * micro_batch, zero=1)
    auto = perfsim.estimate(**kw)
    chosen = auto["plan"]["recompute"]
    explicit = perfsim.estimate(**kw, recompute=chosen)
    assert auto["step_time_s"] == explicit["step_time_s"] or (auto["step_time_s"] is None and
                                                             explicit["step_time_s"] is None)
    assert auto["feasible"] == explicit["feasible"]
    if chosen in LIGHTER:  # the next lighter recomputation does not fit
        assert not perfsim.estimate(**kw, recompute=LIGHTER[chosen])["feasible"]
    if auto["feasible"] and chosen != "none":
        assert auto["step_time_s"] >= perfsim.estimate(**kw, recompute="none")["step_time_s"] * (1 - 1e-9)


def test_cli_takes_pp_layers_and_prints_the_plan():
    from click.testing import CliRunner

    from perfsim.cli import cli

    args = ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train", "--pp", "3",
            "--num-devices", "3", "--global-batch", "12"]
    out = CliRunner().invoke(cli, [*args, "--pp-layers", "10,12,10"])
    assert out.exit_code == 0, out.output
    assert "layers per stage 10,12,10" in out.output and "recompute" in out.output
    balanced = CliRunner().invoke(cli, args)
    assert "layers per stage 11,11,10" in balanced.output  # the middle stage, then the first, takes an extra one
    bad = CliRunner().invoke(cli, [*args, "--pp-layers", "10,x,10"])
    assert bad.exit_code == 2 and "pp_layers" in bad.output


def test_an_fp16_only_device_defaults_to_fp16_and_an_infeasible_plan_exits_3():
    from click.testing import CliRunner

    from perfsim.cli import cli

    r = perfsim.estimate(model="llama2-7b", hardware="npu-pim", batch=4)
    assert r["feasible"] and r["plan"]["dtype"] == "fp16"
    assert perfsim.estimate(model="llama2-7b", hardware="a100-80gb")["plan"]["dtype"] == "bf16"
    out = CliRunner().invoke(cli, ["estimate", "--model", "llama2-70b", "--hardware", "a100-40gb"])
    assert out.exit_code == 3 and out.output.startswith("feasible: NO  (does not fit")
    assert "for reference only" in out.output
