"""Pipeline schedules and context parallelism: bubble ordering and trends, ring-attention traffic."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim

BASE = dict(model="gpt3-175b", hardware="a100-80gb", mode="train", tp=8, recompute="full", seq_len=2048,
            micro_batch=1)


@settings(max_examples=15)
@given(pp=st.sampled_from([2, 4, 8, 16]), dp=st.sampled_from([1, 2, 4]), micro=st.sampled_from([8, 16, 32, 64]))
def test_bubble_order_and_trends(pp, dp, micro):
    gb = dp * micro
    df = perfsim.sweep(**BASE, pp=pp, dp=dp, global_batch=gb,
                       schedule=["gpipe", "1f1b", "zero-bubble", "interleaved"], virtual_stages=[1, 2])
    bubble = {(r.schedule, r.virtual_stages): r["breakdown.train.bubble_s"] for _, r in df.iterrows()}
    assert bubble[("zero-bubble", 1)] <= bubble[("1f1b", 1)] <= bubble[("gpipe", 1)] + 1e-12
    assert bubble[("interleaved", 2)] < bubble[("interleaved", 1)]  # interleaving shrinks the bubble
    more = perfsim.sweep(**BASE, pp=pp, dp=dp, global_batch=[gb, 2 * gb, 4 * gb])
    assert np.all(np.diff(more["bubble_fraction"].to_numpy()) < 0)  # more micro-batches, smaller share


def test_context_parallel_ring_attention():
    kw = dict(model="llama3-8b", hardware="h100-sxm", mode="train", tp=8, seq_len=131072, global_batch=1,
              recompute="full")
    one = perfsim.estimate(**kw, cp=1)
    cp4 = perfsim.estimate(**kw, cp=4)
    b = cp4["breakdown"]["train"]
    assert b["cp_communication_s"] > 0 and 0 <= b["cp_exposed_s"] <= b["cp_communication_s"]
    assert one["breakdown"]["train"]["cp_communication_s"] == 0
    # each rank holds a quarter of the sequence
    assert cp4["memory_per_device_gib"]["activations"] < 0.3 * one["memory_per_device_gib"]["activations"]
    assert cp4["step_time_s"] < one["step_time_s"]
    bad = perfsim.estimate(**{**kw, "seq_len": 131071}, cp=4)
    assert not bad["feasible"] and "cp does not divide seq_len" in bad["reason"]
