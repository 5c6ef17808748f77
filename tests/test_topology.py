"""Three fabric levels (package, node, network) and rings across nodes."""

import pytest

import perfsim

_GIB8 = 8 * 2**30


def test_package_link_serves_groups_inside_one_package():
    """MI250X: two GCDs of one package talk over 200 GB/s in-package Infinity Fabric, a group
    spanning packages over the 50 GB/s cross-package links."""
    pair = perfsim.collective("mi250x", "all_reduce", _GIB8, 2)
    quad = perfsim.collective("mi250x", "all_reduce", _GIB8, 4)
    assert pair["busbw_gb_s"] > 3.0 * quad["busbw_gb_s"]
    assert pair["busbw_gb_s"] <= 200.0
    # a spec without a package level is unchanged by the level
    assert perfsim.collective("h100-sxm", "all_reduce", _GIB8, 2)["busbw_gb_s"] == pytest.approx(
        perfsim.collective("h100-sxm", "all_reduce", _GIB8, 4)["busbw_gb_s"], rel=0.35)


def test_tensor_parallel_pair_on_mi250x_is_faster_than_across_packages():
    kw = dict(model="llama2-13b", hardware="mi250x", batch=8, prompt_len=1024, gen_len=64)
    two = perfsim.estimate(**kw, tp=2)["breakdown"]["decode"]["communication_s"]
    four = perfsim.estimate(**kw, tp=4)["breakdown"]["decode"]["communication_s"]
    assert two < four


def test_rings_across_nodes_use_every_nic_of_the_node():
    """A ring over whole nodes runs one channel per NIC: its bus bandwidth is bounded by the
    node's NICs together and by the scale-up fabric, and grows with the NIC bandwidth."""
    out = [perfsim.collective({"base": "mi300x", "scaleout_gb_s": bw}, "all_reduce", _GIB8, 32, algorithm="ring")
           ["busbw_gb_s"] for bw in (12.5, 25.0, 50.0, 100.0)]
    assert out == sorted(out)
    assert out[0] <= 8 * 12.5 * 1.0 + 1e-9          # the node's NICs
    assert out[-1] <= 8 / 7 * 448 * 1.0 + 1e-9      # the scale-up fabric feeding the ring
    assert out[-1] == pytest.approx(out[-2], rel=0.05)  # fabric-bound once NICs outrun it


def test_data_parallel_group_one_rank_per_node_uses_its_own_nic():
    """With tp 8 inside the node, a data-parallel group has one rank per node: its ring runs
    on that device's NIC alone, far slower than a group with eight ranks per node."""
    import numpy as np

    from perfsim.cost.topology import group_collective
    from perfsim.plan.columns import hardware_columns
    from perfsim.specs.hardware import load_hardware

    c = hardware_columns(load_hardware("h100-sxm"))
    wide = group_collective(c, "all_gather", 2.0**30, 64.0, stride=1.0)
    thin = group_collective(c, "all_gather", 2.0**30, 64.0, stride=8.0)
    assert float(thin) > 5.0 * float(wide)
    assert np.isfinite(thin)


def test_op_level_selective_recompute_recomputes_half_the_matmuls():
    kw = dict(model="llama3-8b", hardware="a100-80gb", mode="train", dp=8, zero=3, seq_len=4096, global_batch=64)
    sac = perfsim.estimate(**kw, recompute="selective", runtime="torchtitan")
    core = perfsim.estimate(**kw, recompute="selective", runtime="nemo")
    # torchtitan's op policy recomputes every other matmul: ~1/6 more hardware FLOPs
    assert sac["hfu"] / sac["mfu"] == pytest.approx(1.0 + 0.5 / 3.0, rel=0.05)
    assert core["hfu"] / core["mfu"] < 1.1  # the attention core only
