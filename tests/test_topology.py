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


def test_collective_pays_its_base_latency_once_whatever_ranks_and_size():
    """alpha-beta with NCCL's base latency: base + steps x per-step latency + bus bytes / bandwidth,
    the faster of the simple and the LL protocol (LL: half the bandwidth)."""
    import numpy as np

    from perfsim.cost.collectives import collective_time

    kw = dict(bandwidth=450e9, efficiency=0.65, latency_s=7e-6, ll_latency_s=1e-6)
    size, n = np.array([512.0, 512.0, 0.0, 2.0**30]), np.array([2.0, 8.0, 8.0, 1.0])
    t = collective_time("all_gather", size, n, base_latency_s=5e-6, **kw)
    ll = 5e-6 + 1 * 1e-6 + 0.5 * 512 / (450e9 * 0.65 * 0.5)      # 2 ranks: 1 step, LL
    assert t[0] == pytest.approx(ll, rel=1e-12)
    assert t[1] == pytest.approx(5e-6 + 7 * 1e-6 + 7 / 8 * 512 / (450e9 * 0.65 * 0.5), rel=1e-12)
    assert t[2] == 0.0 and t[3] == 0.0                              # nothing sent, or one rank
    big = collective_time("all_gather", 2.0**30, 8.0, base_latency_s=5e-6, **kw)   # simple protocol
    assert big == pytest.approx(5e-6 + 7 * 7e-6 + 7 / 8 * 2**30 / (450e9 * 0.65), rel=1e-12)


def test_base_latency_is_added_once_inside_and_across_nodes():
    from perfsim.api import _hw_columns
    from perfsim.cost.topology import group_collective

    _, _, c = _hw_columns("h200")
    c = dict(c)
    for op in ("all_reduce", "all_gather", "all_to_all", "send_recv"):
        for ranks in (2.0, 8.0, 32.0):  # one node, and four nodes
            with_base = group_collective(dict(c, scaleup_base_s=1e-3), op, 2.0**20, ranks)
            without = group_collective(dict(c, scaleup_base_s=0.0), op, 2.0**20, ranks)
            assert with_base - without == pytest.approx(1e-3, rel=1e-9), (op, ranks)
        assert group_collective(dict(c, scaleup_base_s=1e-3), op, 0.0, 8.0) == 0.0


def test_h200_small_collective_latency_grows_with_ranks_less_than_its_steps():
    """nccl-tests on 8x H200 (aiconfigurator h200_sxm nccl 2.29.2): a 512 B all-gather takes about
    5 us on 2 GPUs and 11 us on 8, far less than the 7x its ring steps would give without the fixed
    cost of the collective."""
    two = perfsim.collective("h200", "all_gather", 512, 2)["time_s"]
    eight = perfsim.collective("h200", "all_gather", 512, 8)["time_s"]
    assert 3e-6 < two < 8e-6 and 8e-6 < eight < 15e-6
    assert eight / two < 3.0


def test_nccl_table_fit_recovers_the_parameters_that_made_the_table(tmp_path):
    """validation/fit_nccl_tables.py on a synthetic nccl-tests table priced with known scale-up
    numbers gives those numbers back (message_size in elements, latency in ms, as aiconfigurator
    stores them)."""
    import importlib.util
    import pathlib

    import numpy as np
    import pandas as pd

    from perfsim.api import _hw_columns
    from perfsim.cost.topology import group_collective

    path = pathlib.Path(__file__).resolve().parents[1] / "validation" / "fit_nccl_tables.py"
    spec = importlib.util.spec_from_file_location("fit_nccl_tables", path)
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    _, _, c = _hw_columns("b200")
    truth = dict(c, scaleup_eff=0.7, scaleup_lat_s=4e-6, scaleup_ll_s=1.5e-6, scaleup_base_s=6e-6, nvls_eff=0.0)
    rows = []
    for op in ("all_gather", "reduce_scatter", "all_reduce"):
        for n in (2, 4, 8):
            for size in 2.0 ** np.arange(9, 30, 2):
                t = float(group_collective(truth, op, size, float(n)))
                rows.append(dict(op_name=op, num_gpus=n, nccl_dtype="half", message_size=int(size // 2),
                                 latency=t * 1e3))
    pd.DataFrame(rows).to_parquet(tmp_path / "nccl_perf.parquet")
    x, _ = fit.fit(dict(c), fit.load_table(tmp_path / "nccl_perf.parquet"), nvls=False)
    assert x[:4] == pytest.approx([0.7, 4.0, 1.5, 6.0], rel=0.02)
