"""Pareto fronts, best rows and the optimisers (training plans, serving deployments)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import perfsim
from perfsim.errors import InputError
from perfsim.explore.pareto import front_mask


def _brute_front(p):
    return np.array([not np.any(np.all(p <= row, axis=1) & np.any(p < row, axis=1)) for row in p], dtype=bool)


@given(st.integers(1, 4).flatmap(lambda k: arrays(np.float64, st.tuples(st.integers(0, 60), st.just(k)),
                                                  elements=st.integers(0, 5).map(float))))
def test_front_equals_brute_force(points):
    np.testing.assert_array_equal(front_mask(points), _brute_front(points))


def test_front_of_random_points_many_objectives():
    rng = np.random.default_rng(1)
    for k in (2, 3, 5):
        p = rng.random((700, k))
        np.testing.assert_array_equal(front_mask(p), _brute_front(p))


def test_pareto_and_best_on_a_sweep():
    df = perfsim.sweep(model="llama2-70b", hardware="h100-sxm", tp=[2, 4, 8], batch=[1, 2, 4, 8, 16, 32, 64, 128, 256],
                       prompt_len=1024, gen_len=256)
    front = perfsim.pareto(df, minimize="tpot_s", maximize="throughput_tokens_per_s")
    feasible = df[df["feasible"]]
    assert 0 < len(front) < len(feasible) and front["feasible"].all()
    assert front["tpot_s"].is_monotonic_increasing and front["throughput_tokens_per_s"].is_monotonic_increasing
    for _, row in feasible.iterrows():  # every feasible row is matched or beaten by a front row
        assert ((front["tpot_s"] <= row["tpot_s"]) & (front["throughput_tokens_per_s"] >= row["throughput_tokens_per_s"])).any()
    top = perfsim.best(df, "max:throughput_tokens_per_s", constraints="tpot_s < 0.03")
    ok = feasible[feasible["tpot_s"] < 0.03]
    assert len(top) == 1 and top["throughput_tokens_per_s"].iloc[0] == ok["throughput_tokens_per_s"].max()
    assert list(perfsim.best(df, "min:ttft_s", n=3).index) == list(feasible["ttft_s"].nsmallest(3).index)
    with pytest.raises(InputError, match="did you mean 'tpot_s'"):
        perfsim.pareto(df, minimize="tpot")
    with pytest.raises(InputError, match="objective"):
        perfsim.best(df, "fastest:tpot_s")


def test_training_optimiser_beats_the_published_megatron_plan():
    """GPT-3 175B on 1024 A100-80GB, global batch 1536, seq 2048 (Narayanan et al. 2021, Table 1:
    TP 8, PP 16, DP 8, micro-batch 1): the optimiser's plan is at least as fast as that plan under
    the same memory limit (device memory), whichever schedule and recomputation the plan uses."""
    job = dict(model="gpt3-175b", hardware="a100-80gb", num_devices=1024, global_batch=1536, seq_len=2048)
    plans = perfsim.optimize_training(**job, top=3)
    found = plans.iloc[0]
    assert found["feasible"] and found["tp"] * found["pp"] * found["dp"] == 1024
    assert found["memory_per_device_gib.total"] <= found["memory_per_device_gib.capacity"]
    published = []
    for schedule, v in (("1f1b", 1), ("interleaved", 2), ("interleaved", 3)):
        for recompute in ("full", "selective", "none"):
            r = perfsim.estimate(**job, mode="train", tp=8, pp=16, dp=8, micro_batch=1, schedule=schedule,
                                 virtual_stages=v, recompute=recompute)
            if r["feasible"]:
                published.append(r["step_time_s"])
    assert published and found["step_time_s"] <= min(published)
    # the optimiser's answer is what estimate says for that plan
    plan = {k: found[k] for k in ("tp", "pp", "micro_batch", "zero", "virtual_stages")}
    r = perfsim.estimate(**job, mode="train", **{k: int(v) for k, v in plan.items()}, schedule=str(found["schedule"]),
                         recompute=str(found["recompute"]))
    assert r["step_time_s"] == pytest.approx(found["step_time_s"], rel=1e-12)
    # a tighter memory limit is honoured
    tight = perfsim.optimize_training(**job, memory_limit_gib=40, top=1)
    assert tight["memory_per_device_gib.total"].iloc[0] <= 40
    assert tight["step_time_s"].iloc[0] >= found["step_time_s"]


def test_serving_optimiser_meets_slos():
    out = perfsim.optimize_serving("llama2-7b", "a100-80gb", num_devices=2, arrival_rate=4.0, ttft_slo_s=0.5,
                                   tpot_slo_s=0.05, prompt_len=512, gen_len=64, num_requests=100, candidates=3,
                                   max_batch=[16, 64])
    assert 1 <= len(out) <= 3 and out.attrs["passed"] >= 1
    top = out.iloc[0]
    assert top["feasible"] and top["slo_attainment"] >= 0.9
    assert set(out["tp"] * out["instances"]) == {2}
    with pytest.raises(InputError, match="arrival_rate"):
        perfsim.optimize_serving("llama2-7b", "a100-80gb", num_devices=2, arrival_rate=0, ttft_slo_s=1, tpot_slo_s=1)
