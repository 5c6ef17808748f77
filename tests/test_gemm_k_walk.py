"""TensorRT-LLM's block-scaled dense GEMMs (nvfp4; fp8 of a checkpoint with 128 x 128 block scales)
at small M: every 128 x 128 output tile's SM walks all of K, so the time is a fixed part plus a
part per element of K, whatever M and N (runtime keys ``fp4_gemm_*_on``, ``fp8_block_gemm_*_on``)."""

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


#: the same for TensorRT-LLM's fp8 block-scaled Linear (gemm_dtype fp8_block) on H200, same file's h200_sxm
MEASURED_FP8_BLOCK_H200_US = {
    (1, 1536, 7168): 12.97, (16, 4096, 7168): 15.16, (64, 2048, 16384): 22.87, (128, 1024, 4096): 9.25,
    (16, 128, 65536): 75.86, (8, 2048, 2048): 6.57,
}


def _columns(dtype="fp4", hardware="b200", runtime="trt-llm", model="llama3-8b"):
    return build(expand({"model": model, "hardware": hardware, "num_devices": 1, "dtype": dtype,
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
    launch, fixed, per_k = float(c["launch_s"]), float(c["walk_fixed_s"]), float(c["walk_k_s"])
    expected = (launch + fixed + per_k * 16384) * 1e6
    for m, n in ((1, 128), (16, 2048), (128, 4096)):
        assert _time_us(c, m, n, 16384) == pytest.approx(expected, rel=1e-12)


def test_more_tiles_than_sms_and_other_formats_keep_the_roofline():
    c = _columns()
    # 400 tiles of 128 x 128 on 148 SMs: not one round, the roofline's time
    off = dict(c, walk_k_s=0.0 * c["walk_k_s"])
    assert _time_us(c, 16, 51200, 8192) == _time_us(off, 16, 51200, 8192)
    # the fused MoE experts (their own fitted shares) and 16-bit GEMMs are not walked
    assert _time_us(c, 16, 2048, 16384, expert=True) == _time_us(off, 16, 2048, 16384, expert=True)
    assert _time_us(c, 16, 2048, 16384, wide=1.0) == _time_us(off, 16, 2048, 16384, wide=1.0)
    # 16-bit, and fp8 of a checkpoint without block scales (per-tensor scales: split-K kernels), are not walked
    assert float(_columns("bf16")["walk_k_s"]) == 0.0
    assert float(_columns("fp8", "h200")["walk_k_s"]) == 0.0
    # a family without the keys adds nothing
    assert float(_columns("fp4", "h200")["walk_k_s"]) == 0.0


def test_small_m_fp8_block_gemms_near_measured():
    c = _columns("fp8", "h200", model="deepseek-v3")
    assert float(c["fp8_block"]) == 1.0  # DeepSeek-V3's quantization_config: weight_block_size [128, 128]
    ratios = np.array([_time_us(c, *shape) / us for shape, us in MEASURED_FP8_BLOCK_H200_US.items()])
    # (the Hopper line, fitted over every M up to 128, sits above these well-aligned M: 0.98-1.31)
    assert 0.9 < float(np.exp(np.mean(np.log(ratios)))) < 1.25
    assert ratios.min() > 0.75 and ratios.max() < 1.4
    # priced as per-tensor fp8 (the roofline alone) these were 0.1-0.6 of the measured time
    plain = np.array([_time_us(_columns("fp8", "h200"), *shape) / us
                      for shape, us in MEASURED_FP8_BLOCK_H200_US.items()])
    assert float(np.exp(np.mean(np.log(plain)))) < 0.6


def test_block_size_must_be_whole_numbers():
    from perfsim.specs.model import load_model
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
    assert load_model(dict(base, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}))[
        "fp8_block_scales"] is True
    assert not load_model(dict(base, quantization_config={"quant_method": "fp8"})).fields.get("fp8_block_scales")
    with pytest.raises(InputError, match="weight_block_size"):
        load_model(dict(base, quantization_config={"quant_method": "fp8", "weight_block_size": "128"}))


def test_negative_walk_time_is_refused():
    with pytest.raises(InputError, match="ns"):
        load_runtime({"base": "trt-llm", "fp4_gemm_k_ns_on": {"blackwell": -1.0}})


#: large fp8 block-scaled Linear times (us) from the same tables (h200_sxm, b200_sxm fp8_block rows)
MEASURED_FP8_BLOCK_LARGE_US = {
    "h200": {(8192, 8192, 8192): 987.7, (16384, 7168, 16384): 3519.2, (8192, 16384, 7168): 1587.7},
    "b200": {(8192, 8192, 8192): 411.3, (16384, 7168, 16384): 1466.1, (8192, 16384, 7168): 696.4},
}


@pytest.mark.parametrize("hw", sorted(MEASURED_FP8_BLOCK_LARGE_US))
def test_large_fp8_block_gemms_reach_their_share_of_the_ceiling(hw):
    c = _columns("fp8", hw, model="deepseek-v3")
    plain = _columns("fp8", hw)  # per-tensor scales: the whole fp8 ceiling
    assert float(plain["block_gemm_eff"]) == 1.0 and 0.0 < float(c["block_gemm_eff"]) < 1.0
    rows = MEASURED_FP8_BLOCK_LARGE_US[hw]
    ratios = np.array([_time_us(c, *shape) / us for shape, us in rows.items()])
    assert np.all((ratios > 0.9) & (ratios < 1.1))
    if hw == "h200":  # at the per-tensor ceiling these were 0.78-0.80 of the measured time
        assert max(_time_us(plain, *shape) / us for shape, us in rows.items()) < 0.85
    # the compute-bound time scales with the share exactly
    shape = (8192, 8192, 8192)
    launch = float(c["launch_s"]) * 1e6
    assert (_time_us(plain, *shape) - launch) == pytest.approx(
        (_time_us(c, *shape) - launch) * float(c["block_gemm_eff"]), rel=1e-9)
    # the fused MoE experts keep their own fitted share
    assert _time_us(c, *shape, expert=True) == _time_us(plain, *shape, expert=True)
