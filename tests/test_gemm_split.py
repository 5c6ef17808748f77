"""Split-K in the GEMM efficiency (perfsim.cost.roofline.SPLIT_K): hand-computed times, the
choice never worse than no split, and measured kernel times it reproduces (the Blackwell ceilings
against the same measured tables: tests/test_blackwell_gemm_ceiling.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import perfsim
from perfsim.cost.roofline import gemm_efficiency
from perfsim.specs.hardware import load_hardware


def test_few_tiles_split_k_by_hand():
    # h100-sxm bf16, 128 x 2048 x 8192: 16 output tiles of 128 x 128 on 132 SMs. Unsplit, 16 of
    # 132 SMs work; in 8 slices 128 do, and the 7 extra fp32 partials per output element (8 bytes:
    # written, read back) cost 7 x 8 x 128 x 2048 bytes at the reachable bandwidth
    spec = load_hardware("h100-sxm")
    peak, gmax = spec.peak("bf16") * 1e12, spec.gemm_max("bf16")
    bw = spec["hbm_bandwidth_gb_s"] * 1e9 * spec["memory_max"]
    flops = 2.0 * 128 * 2048 * 8192
    split8 = flops / (peak * gmax * 128 / 132) + 7 * 8.0 * 128 * 2048 / bw
    split16 = flops / (peak * gmax * 256 / 264) + 15 * 8.0 * 128 * 2048 / bw
    unsplit = flops / (peak * gmax * 16 / 132)
    assert split8 < split16 < unsplit
    # the split leaves it bound by streaming its weights, after the stream's fixed fill and drain
    weights = 2.0 * (128 * 8192 + 8192 * 2048 + 128 * 2048) / bw + spec["gemm_stream_latency_us"] * 1e-6
    assert split8 < weights < unsplit
    expected = weights + spec["kernel_launch_us"] * 1e-6
    assert perfsim.gemm("h100-sxm", 128, 2048, 8192, "bf16")["time_s"] == pytest.approx(expected, rel=1e-12)


def test_shallow_k_does_not_split():
    # 1024^3 on a100-80gb: 64 tiles on 108 SMs; splitting K = 1024 would cost more in partial sums
    # than the idle SMs lose, so the efficiency is the unsplit tile x wave product
    spec = load_hardware("a100-80gb")
    balance = spec.peak("fp16") * 1e12 / (spec["hbm_bandwidth_gb_s"] * 1e9 * spec["memory_max"])
    eff = gemm_efficiency(1024, 1024, 1.0, 128, 128, 108, 0.8, k=1024, balance=balance)
    assert float(eff) == pytest.approx(0.8 * 64 / 108, rel=1e-12)


@given(m=st.integers(1, 20000), n=st.integers(1, 20000), k=st.integers(1, 60000), balance=st.floats(50, 2000))
def test_split_is_a_choice_never_worse_nor_above_the_ceiling(m, n, k, balance):
    unsplit = gemm_efficiency(m, n, 1.0, 128, 128, 132, 0.8)
    split = gemm_efficiency(m, n, 1.0, 128, 128, 132, 0.8, k=k, balance=balance)
    assert unsplit <= split <= 0.8 + 1e-12


@pytest.mark.parametrize("hw, m, n, k, measured_us", [
    # NVIDIA's measured bf16 GEMM times (TensorRT-LLM Linear, CUDA graphs): ai-dynamo/aiconfigurator
    # 095f58a51 aic-core/src/aiconfigurator_core/systems/data/h100_sxm/gemm/trtllm/1.3.0rc20 and
    # a100_sxm/gemm/trtllm/1.0.0 gemm_perf.parquet
    ("h100-sxm", 128, 2048, 8192, 18.93),
    ("h100-sxm", 112, 2048, 2048, 7.00),
    ("a100-80gb", 96, 2048, 2048, 12.29),
])
def test_few_tile_gemms_near_measured(hw, m, n, k, measured_us):
    # unsplit these took 2.2-2.7x the measured time; replayed from a CUDA graph, the kernels start
    # 1.5 us apart (runtimes/trt-llm.yaml kernel_launch_us) where perfsim.gemm charges the eager launch
    eager = load_hardware(hw)["kernel_launch_us"]
    assert (perfsim.gemm(hw, m, n, k, "bf16")["time_s"] * 1e6 - eager + 1.5) == pytest.approx(measured_us, rel=0.3)


@given(m=st.lists(st.integers(0, 20000), min_size=1, max_size=6), n=st.integers(1, 20000), k=st.integers(1, 60000),
       balance=st.sampled_from([50.0, 330.0, 2000.0, float("inf")]), m_sd=st.sampled_from([0.0, 3.0, 300.0]))
def test_splits_priced_together_equal_each_gemm_alone(m, n, k, balance, m_sd):
    # the unsplit kernel's waves and the splits' are taken on one axis: each GEMM of an array (rows
    # spread over its groups or not) gets the bits it gets alone, and an unreachable memory (balance
    # inf) leaves the unsplit kernel's efficiency (the splits' partial sums cost without end)
    import numpy as np

    rows = np.array(m, dtype=float)
    together = gemm_efficiency(rows, n, 4.0, 128, 128, 132, 0.8, k=k, balance=balance, m_sd=m_sd)
    for i, one in enumerate(m):
        alone = gemm_efficiency(float(one), n, 4.0, 128, 128, 132, 0.8, k=k, balance=balance, m_sd=m_sd)
        assert together[i].tobytes() == np.float64(alone).tobytes()
    if balance == float("inf"):
        assert np.array_equal(together, gemm_efficiency(rows, n, 4.0, 128, 128, 132, 0.8, m_sd=m_sd))
