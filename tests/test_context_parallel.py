"""Ring context parallelism: the merge traffic around the per-step attention calls, the ring's
slowest hop, and the ring's bytes in the power model's traffic."""

import dataclasses

import numpy as np
import pytest

from perfsim.analytical.training import stage_times
from perfsim.cost.price import price
from perfsim.cost.topology import group_collective
from perfsim.graph.transformer import Pass, attention_ops, kv_bytes_per_token, layer_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

MIB = 2.0**20


def _config(**kw):
    plan = {"model": "llama3-8b", "hardware": "h100-sxm", "mode": "train", "seq_len": 8192, "global_batch": 8,
            "micro_batch": 1, "recompute": "none", "runtime": "nemo", **kw}
    return build(expand(plan))


def _pass(c):
    cp = c["cp"]
    q_len = c["seq_len"] / cp
    return Pass(tokens=q_len, seqs=1.0, q_len=q_len, kv_len=c["seq_len"], causal=np.where(cp > 1, 0.5, 1.0),
                logits_tokens=q_len)


def _merge(c):
    return next(op for op in attention_ops(c, _pass(c)) if op.name == "cp_ring_merge")


def test_merge_traffic_by_hand():
    """llama3-8b (32 query heads, 8 KV heads of 128), tp 1, cp 4, 8K tokens: 2048 local tokens, so
    Q = O = 2048 x 32 x 128 x 2 B = 16 MiB and K + V = 2048 x 8 x 256 x 2 B = 8 MiB. Forward
    2 KV + 2 O + 3 (KV / 2 + Q / 2 + 2.25 O) = 16 + 32 + 3 (4 + 8 + 36) = 192 MiB in 3 cp - 1 = 11
    kernels; backward 7 KV + 3 Q + 3 (2.75 Q + O + 4.25 KV) = 56 + 48 + 3 (44 + 16 + 34) = 386 MiB in
    5 cp - 1 = 19 kernels; priced at the memory roofline plus a launch per kernel."""
    c = _config(cp=4, tp=1, dp=2, num_devices=8)
    op = _merge(c)
    assert float(np.asarray(op.moved_bytes)) == pytest.approx(192.0 * MIB, rel=1e-12)
    assert float(np.asarray(op.backward_bytes)) == pytest.approx(386.0 * MIB, rel=1e-12)
    assert float(np.asarray(op.kernels)) == 11.0 and float(np.asarray(op.backward_kernels)) == 19.0
    bw = float(np.asarray(c["hbm_bw"] * c["memory_max"]))
    launch = float(np.asarray(c["launch_s"]))
    for backward, moved, kernels in ((False, 192.0, 11.0), (True, 386.0, 19.0)):
        t = price(c, [op], backward=backward)
        assert float(np.asarray(t["elementwise_s"])) == pytest.approx(moved * MIB / bw + kernels * launch, rel=1e-9)
        assert float(np.asarray(t["hbm_bytes"])) == pytest.approx(moved * MIB, rel=1e-12)


def test_no_context_parallelism_no_merge():
    """cp = 1: the op carries nothing, and a layer prices exactly as without it."""
    c = _config(cp=1, tp=1, dp=8, num_devices=8)
    op = _merge(c)
    assert float(np.asarray(op.moved_bytes)) == 0.0 and float(np.asarray(op.backward_bytes)) == 0.0
    ops = layer_ops(c, _pass(c), moe=False)
    without = [o for o in ops if o.name != "cp_ring_merge"]
    for backward in (False, True):
        a, b = price(c, ops, backward=backward), price(c, without, backward=backward)
        assert {k: float(np.asarray(v)) for k, v in a.items()} == {k: float(np.asarray(v)) for k, v in b.items()}


@pytest.mark.parametrize("cp", [2, 4, 8, 32])
def test_merge_grows_with_ring_steps(cp):
    """More ring steps over the same local tokens: more merge traffic, forward and backward."""
    small, large = _config(cp=cp, tp=1, seq_len=2048 * cp), _config(cp=2 * cp, tp=1, seq_len=4096 * cp)
    a, b = _merge(small), _merge(large)
    assert float(np.asarray(b.moved_bytes)) > float(np.asarray(a.moved_bytes)) > 0.0
    assert float(np.asarray(b.backward_bytes)) > float(np.asarray(a.backward_bytes)) > 0.0


def test_ring_waits_for_its_slowest_hop():
    """tp 4, cp 4 on 8-GPU nodes: two ring ranks a node, so two of the four hops cross nodes and every
    step waits for them: the hop is priced as a send/receive between nodes, not inside one."""
    c = _config(cp=4, tp=4, dp=1, num_devices=16, seq_len=32768)
    t = stage_times(c)
    chunk = (c["seq_len"] / c["cp"]) * kv_bytes_per_token(c)
    across = group_collective(c, "send_recv", chunk, 2.0, stride=8.0)  # a pair on two nodes
    inside = group_collective(c, "send_recv", chunk, 2.0, stride=4.0)  # a pair in one node
    expected = 3.0 * across * c["stage_layers"]
    assert float(np.asarray(t["ring_s"])) == pytest.approx(float(np.asarray(expected)), rel=1e-12)
    assert float(np.asarray(across)) > float(np.asarray(inside))


def test_ring_bytes_in_the_step_traffic():
    """The ring's bytes reach the power model: cp 2 with tp 8 (the pair on two nodes), no data
    parallelism: each step sends 3 (cp - 1) K/V chunks a layer a micro-batch (forward K/V, backward
    K/V and their gradients) over the NIC, beyond the tensor-parallel traffic, and the same plan
    without the ring's bytes is that much less."""
    from perfsim.api import estimate

    plan = dict(model="llama3-8b", hardware="h100-sxm", mode="train", tp=8, pp=1, dp=1, cp=2, seq_len=16384,
                global_batch=1, micro_batch=1, recompute="none", zero=1, runtime="nemo")
    r = estimate(**plan)
    c = _config(**{k: v for k, v in plan.items() if k not in ("model", "hardware", "mode", "runtime")},
                num_devices=16)
    chunk = float(np.asarray(8192.0 * kv_bytes_per_token(c)))
    layers = float(np.asarray(c["stage_layers"]))
    ring = 3.0 * chunk * layers
    t = stage_times(c)
    # the TP collectives are inside the node; the data-parallel (dp x cp = 2) gradient sync crosses it
    dp_nic = float(np.asarray(t["data_parallel"]["nic_bytes"]))
    assert float(r["breakdown"]["train"]["nic_bytes"]) == pytest.approx(ring + dp_nic, rel=1e-9)


def test_merge_field_defaults_double_the_forward():
    """An elementwise op without its own gradient traffic keeps twice the forward's."""
    c = _config(cp=2, tp=1)
    op = dataclasses.replace(_merge(c), backward_bytes=None, backward_kernels=None)
    f, b = price(c, [op]), price(c, [op], backward=True)
    assert float(np.asarray(b["hbm_bytes"])) == pytest.approx(2.0 * float(np.asarray(f["hbm_bytes"])), rel=1e-12)


def test_without_a_ring_the_merge_op_is_empty_and_prices_to_nothing():
    import numpy as np

    from perfsim.cost.price import price
    from perfsim.graph.transformer import Pass, ring_merge
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    c = build(expand(dict(model="llama2-7b", hardware="h100-sxm", mode="train")))
    for causal in (1.0, 0.0):  # a causal pass on one rank, a decode step
        p = Pass(tokens=4096.0, seqs=2.0, q_len=2048.0, kv_len=2048.0, causal=causal, logits_tokens=4096.0)
        op = ring_merge(c, p, 128.0, 128.0)
        assert (op.moved_bytes, op.kernels, op.backward_bytes, op.backward_kernels) == (0.0, 0.0, 0.0, 0.0)
        for backward in (False, True):
            assert np.all(price(c, [op], backward=backward)["total_s"] == 0.0)
    ring = ring_merge(c, Pass(tokens=2048.0, seqs=1.0, q_len=2048.0, kv_len=4096.0, causal=0.5, logits_tokens=2048.0),
                      128.0, 128.0)
    assert ring.moved_bytes > 0 and ring.kernels > 0
