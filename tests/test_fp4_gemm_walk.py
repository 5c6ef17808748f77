"""TensorRT-LLM's nvfp4 dense GEMM at small M: every 128 x 128 output tile's SM walks all of K, so
the time is a fixed part plus a part per element of K, whatever M and N (runtime keys
``fp4_gemm_fixed_us_on``, ``fp4_gemm_k_ns_on``)."""

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.errors import InputError
from perfsim.graph.transformer import Gemm
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import load_runtime

#: (M, N, K) -> NVIDIA's measured TensorRT-LLM nvfp4 Linear time (us, input quantisation included,
#: replayed from a CUDA graph, mean of 6 replays) on B200: ai-dynamo/aiconfigurator 095f58a51
#: aic-core/src/aiconfigurator_core/systems/data/b200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet
MEASURED_US = {
    (1, 2048, 8192): 21.53, (16, 128, 16384): 35.77, (16, 2048, 16384): 36.33, (16, 4096, 16384): 37.59,
    (16, 2048, 4096): 13.65, (16, 128, 65536): 126.3, (128, 2048, 16384): 37.5, (64, 7168, 2048): 10.43,
    (1, 4096, 1024): 8.34,
}


def _columns(dtype="fp4", hardware="b200", runtime="trt-llm"):
    return build(expand({"model": "llama3-8b", "hardware": hardware, "num_devices": 1, "dtype": dtype,
                         "runtime": runtime}))


def _time_us(c, m, n, k, **kw):
    return float(price(c, [Gemm("x", float(m), float(n), float(k), **kw)])["gemm_s"]) * 1e6


def test_small_m_nvfp4_gemms_near_measured():
    c = _columns()
    ratios = np.array([_time_us(c, *shape) / us for shape, us in MEASURED_US.items()])
    # the roofline alone priced these at 0.2-0.5 of the measured time
    assert 0.85 < float(np.exp(np.mean(np.log(ratios)))) < 1.1
    assert ratios.min() > 0.75 and ratios.max() < 1.25


def test_time_is_fixed_plus_per_k_whatever_m_and_n():
    c = _columns()
    launch, fixed, per_k = float(c["launch_s"]), float(c["fp4_gemm_fixed_s"]), float(c["fp4_gemm_k_s"])
    expected = (launch + fixed + per_k * 16384) * 1e6
    for m, n in ((1, 128), (16, 2048), (128, 4096)):
        assert _time_us(c, m, n, 16384) == pytest.approx(expected, rel=1e-12)


def test_more_tiles_than_sms_and_other_formats_keep_the_roofline():
    c = _columns()
    # 400 tiles of 128 x 128 on 148 SMs: not one round, the roofline's time
    off = dict(c, fp4_gemm_k_s=0.0 * c["fp4_gemm_k_s"])
    assert _time_us(c, 16, 51200, 8192) == _time_us(off, 16, 51200, 8192)
    # the fused MoE experts (their own fitted shares) and 16-bit GEMMs are not walked
    assert _time_us(c, 16, 2048, 16384, expert=True) == _time_us(off, 16, 2048, 16384, expert=True)
    assert _time_us(c, 16, 2048, 16384, wide=1.0) == _time_us(off, 16, 2048, 16384, wide=1.0)
    bf16 = _columns("bf16")
    assert float(bf16["fp4_gemm_k_s"]) > 0  # the engine's key is there, the format is not 4-bit
    assert _time_us(bf16, 16, 2048, 16384) == _time_us(dict(bf16, fp4_gemm_k_s=0.0 * bf16["fp4_gemm_k_s"]),
                                                         16, 2048, 16384)
    # a family without the keys (Hopper) adds nothing
    assert float(_columns("fp8", "h200")["fp4_gemm_k_s"]) == 0.0


def test_negative_walk_time_is_refused():
    with pytest.raises(InputError, match="ns"):
        load_runtime({"base": "trt-llm", "fp4_gemm_k_ns_on": {"blackwell": -1.0}})
