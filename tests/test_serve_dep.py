"""Attention data parallelism with expert parallelism (DEP): the ranks of an expert group step together."""

import pytest

import perfsim
from perfsim.events.serving import scenario
from perfsim.events.serving.iteration_cost import IterationCost
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

MOE = dict(model="qwen3-30b-a3b", hardware="h100-sxm", num_devices=2, tp=1, pp=1, dp=2, ep=2, runtime="trt-llm")


def _two_prompts(tmp_path, **plan):
    """A long and a short prompt arriving together: one per data-parallel rank."""
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_len,gen_len\n0.0,6000,2\n0.0,16,2\n")
    return perfsim.serve(**plan, trace=str(trace), scheduler="continuous")


def test_dep_ranks_end_each_iteration_together(tmp_path):
    """The short prompt's rank waits for the long prompt's rank at every MoE layer, so both first
    tokens come at the same time; replicas of a dense model (no shared experts) do not wait."""
    r = _two_prompts(tmp_path, **MOE)
    assert r["ttft_s"]["p99"] == pytest.approx(r["ttft_s"]["p50"], rel=1e-9)
    assert r["ttft_s"]["p50"] > 0
    assert r["breakdown"]["sync_ranks"] == 2
    dense = _two_prompts(tmp_path, model="qwen3-32b", hardware="h100-sxm", num_devices=2, tp=1, pp=1, dp=2,
                         runtime="trt-llm", dtype="fp8")
    assert dense["breakdown"]["sync_ranks"] == 1
    # p50 of two is their mean: the short prompt's first token comes long before the long one's
    assert dense["ttft_s"]["p99"] > 1.5 * dense["ttft_s"]["p50"]


def test_group_step_is_the_slowest_rank_with_shared_experts():
    """Equal ranks: the group's iteration is each rank's. A busy rank beside an idle one: longer than
    its work outside the MoE layers, shorter than its iteration alone (its experts' work is spread
    over both ranks), and the MoE part at the group's mean token count."""
    c = build(expand({**MOE, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1}))
    cost = IterationCost(c, max_tokens=4096, max_seqs=8, max_context=4097)
    alone = cost.prefill_step_s(4096, 1, 4096)
    moe = cost.moe_s(4096)
    assert 0 < moe < alone
    assert cost.group_step_s([alone, alone], [4096, 4096], 2) == pytest.approx(alone)
    pair = cost.group_step_s([alone], [4096], 2)
    assert alone - moe < pair < alone
    assert pair == pytest.approx(alone - moe + cost.moe_s(2048))
    # two ranks of unequal work: the slower sets the pace
    short = cost.prefill_step_s(64, 1, 64)
    both = cost.group_step_s([alone, short], [4096, 64], 2)
    assert both > short and both >= alone - moe + cost.moe_s(64)


def test_dep_group_waits_for_its_slowest_rank_under_poisson(monkeypatch):
    """Poisson arrivals put prefills on some ranks while the others decode: every decode step that
    meets another rank's prefill waits for it, so TPOT rises over the same ranks stepping apart."""
    args = dict(**MOE, num_requests=300, arrival_rate=8.0, prompt_len={"dist": "lognormal", "mean": 1500, "sigma": 0.6,
                                                                       "max": 6000}, gen_len=128, seed=1)
    together = perfsim.serve(**args)
    monkeypatch.setattr(scenario, "expert_group_scale", lambda c: 1.0)
    apart = perfsim.serve(**args)
    assert together["breakdown"]["sync_ranks"] == 2 and apart["breakdown"]["sync_ranks"] == 1
    assert together["tpot_s"]["mean"] > 1.05 * apart["tpot_s"]["mean"]


def test_static_batches_and_disaggregated_pools_are_left_apart():
    """A static batch runs its whole generation as one unit and disaggregated pools are not
    modelled in lock step: their ranks step on their own."""
    static = perfsim.serve(**MOE, num_requests=8, scheduler="static", max_batch=4)
    assert static["breakdown"]["sync_ranks"] == 1
    split = perfsim.serve(**{**MOE, "num_devices": 4, "dp": None}, num_requests=8, disaggregate="2:2", arrival_rate=5.0)
    assert split["breakdown"]["sync_ranks"] == 1
