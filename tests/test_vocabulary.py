"""Interface vocabulary: PIM arguments, runtime what-ifs, collective algorithms, what-if sweeps."""

import math

import pytest

import perfsim
from perfsim.specs.hardware import load_hardware


def test_pim_arguments_are_checked():
    r = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", pim_mode="concurrent")
    assert not r["feasible"] and "PIM" in r["reason"]
    r = perfsim.estimate(model="llama3-8b", hardware="h100-sxm", sub_batches=2)
    assert not r["feasible"] and "PIM" in r["reason"]
    with pytest.raises(perfsim.InputError, match="sub_batches"):
        perfsim.estimate(model="llama3-8b", hardware="h100-sxm", sub_batches=3)
    with pytest.raises(perfsim.InputError, match="concurrent"):
        perfsim.estimate(model="llama3-8b", hardware="h100-sxm", pim_mode="dual")


def test_runtime_what_if():
    kw = dict(model="llama3-8b", hardware="h100-sxm", mode="train", global_batch=16, seq_len=4096)
    eager = perfsim.estimate(**kw, runtime={"base": "torchtitan", "compile": False})
    compiled = perfsim.estimate(**kw, runtime={"base": "torchtitan", "compile": True})
    assert compiled["step_time_s"] < eager["step_time_s"]
    with pytest.raises(perfsim.InputError, match="did you mean 'compile'"):
        perfsim.estimate(**kw, runtime={"base": "torchtitan", "compil": True})


def _alpha_beta(steps, moved, bandwidth, latency_s, ll_latency_s=0.0):
    """``steps`` latencies plus ``moved`` bytes at ``bandwidth``; with a low-latency protocol (half
    the bandwidth, its own latency) where the link has one and it is faster."""
    simple = steps * latency_s + moved / bandwidth
    return min(simple, steps * ll_latency_s + moved / (bandwidth / 2)) if ll_latency_s > 0 else simple


@pytest.mark.parametrize("size", [4096, 2**30])
def test_collective_algorithm_choice_by_hand(size):
    """All-reduce over 16 H100s = 2 nodes of 8, from the spec's link numbers."""
    h = load_hardware("h100-sxm")
    n, per_node, nodes = 16, int(h["devices_per_node"]), 2
    up = h["scaleup_gb_s"] * 1e9 * h["scaleup_efficiency"]  # NVLink, per direction, reachable
    nic = h["scaleout_gb_s"] * 1e9 * h["scaleout_efficiency"]  # one NIC per GPU
    up_lat, up_ll = h["scaleup_latency_us"] * 1e-6, h["scaleup_ll_latency_us"] * 1e-6
    out_lat, out_ll = h["scaleout_latency_us"] * 1e-6, h["scaleout_ll_latency_us"] * 1e-6
    # ring: 2(n-1) steps threaded through both nodes, one channel per NIC; the ring's bandwidth is
    # that of 8 NICs or of the NVLink hops inside a node (8 ranks, 7 hops), whichever is lower
    ring_bw = min(per_node * nic, per_node / (per_node - 1) * up)
    ring = _alpha_beta(2 * (n - 1), 2 * (n - 1) / n * size, ring_bw, out_lat, out_ll)
    # tree: reduce-scatter in the node (ring, 7 steps, 7/8 of the buffer), an all-reduce of each
    # GPU's eighth between the nodes as a tree (2 log2(nodes) steps, the eighth each way), all-gather
    in_node = _alpha_beta(per_node - 1, (per_node - 1) / per_node * size, up, up_lat, up_ll)
    tree = 2 * in_node + _alpha_beta(2 * math.log2(nodes), size / per_node, nic, out_lat, out_ll)
    base = h["scaleup_base_latency_us"] * 1e-6  # the collective's fixed cost, paid once
    ring, tree = ring + base, tree + base
    got = {a: perfsim.collective("h100-sxm", "all_reduce", size, n, algorithm=a)["time_s"]
           for a in ("ring", "tree", "auto")}
    assert got["ring"] == pytest.approx(ring, rel=1e-9)
    assert got["tree"] == pytest.approx(tree, rel=1e-9)
    # 4 KiB: the ring pays 30 network latencies (155 us), the tree 2 of them and 14 LL steps on
    # NVLink (30 us): the tree. 1 GiB: the tree sends each GPU's eighth through its own NIC
    # (2.7 ms) after and before an NVLink pass (3.6 ms each), the ring streams 30/16 of the buffer
    # at the NVLink hops' 300 GB/s (6.9 ms): the ring
    expected = "tree" if size == 4096 else "ring"
    assert min(ring, tree) == {"ring": ring, "tree": tree}[expected]
    assert got["auto"] == pytest.approx(got[expected], rel=1e-12)


def test_collective_tree_wins_for_tiny_messages():
    small_ring = perfsim.collective("h100-sxm", "all_reduce", 4096, 64, algorithm="ring")
    small_tree = perfsim.collective("h100-sxm", "all_reduce", 4096, 64, algorithm="tree")
    assert small_tree["time_s"] < small_ring["time_s"]  # log-depth latency wins for tiny messages
    with pytest.raises(perfsim.InputError, match="algorithm"):
        perfsim.collective("h100-sxm", "all_reduce", 4096, 8, algorithm="butterfly")


def test_hardware_what_if_lists_are_one_vectorised_sweep():
    df = perfsim.sweep(model="llama2-70b", hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [1000, 2000, 3350, 4800]},
                       tp=4, batch=8)
    assert list(df["hardware.hbm_bandwidth_gb_s"]) == [1000, 2000, 3350, 4800]
    assert df["tpot_s"].is_monotonic_decreasing
    r = perfsim.estimate(model="llama2-70b", hardware={"base": "h100-sxm", "hbm_capacity_gib": 40}, tp=4, batch=8)
    assert r["memory_per_device_gib"]["capacity"] == 40
