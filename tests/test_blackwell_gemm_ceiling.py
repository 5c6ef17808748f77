"""The Blackwell GEMM ceilings against NVIDIA's measured large-GEMM tables, and the attention
ceiling (``attention_max``) the runtimes' fused-attention shares are taken of."""

import numpy as np
import pytest

import perfsim
from perfsim.errors import InputError
from perfsim.plan.columns import build, dtype_values
from perfsim.plan.grid import expand
from perfsim.specs.hardware import load_hardware, parse_hardware
from perfsim.specs.paths import data_dir
from perfsim.specs.yamlio import load_yaml

#: M x N x K over {4096, 16384}^3, in this order
GRID = [(m, n, k) for m in (4096, 16384) for n in (4096, 16384) for k in (4096, 16384)]

#: NVIDIA's measured TensorRT-LLM Linear times (us; CUDA graph, mean of 6 replays) on that grid:
#: ai-dynamo/aiconfigurator 095f58a51 aic-core/src/aiconfigurator_core/systems/data/<b200_sxm|gb200>/
#: gemm/trtllm/1.3.0rc20/gemm_perf.parquet (collector/trtllm/collect_gemm.py)
MEASURED_US = {
    ("b200", "bf16"): (112.3, 364.0, 334.8, 1339.7, 386.7, 1423.2, 1313.0, 5719.5),
    ("b200", "fp8"): (81.0, 271.1, 252.2, 855.7, 256.7, 1081.9, 796.2, 3142.1),
    ("b200", "fp4"): (54.9, 170.4, 148.7, 530.5, 187.2, 638.0, 604.2, 2830.0),
    ("gb200", "bf16"): (91.3, 357.0, 336.9, 1350.2, 367.3, 1326.4, 1327.3, 4610.0),
    ("gb200", "fp8"): (77.0, 270.4, 248.6, 771.5, 266.9, 1041.9, 732.0, 2777.9),
    ("gb200", "fp4"): (54.2, 173.3, 143.7, 485.0, 186.2, 586.5, 518.3, 2380.0),
}
#: the fp8 Linear quantizes its bf16 input dynamically: the same table set's measured compute_scale +
#: scale_matrix times (us) at (M, K), .../<system>/quantize/trtllm/1.3.0rc20/{computescale,scale_matrix}_perf.parquet
FP8_CAST_US = {
    "b200": {(4096, 4096): 26.7, (4096, 16384): 98.5, (16384, 4096): 98.5, (16384, 16384): 311.9},
    "gb200": {(4096, 4096): 26.0, (4096, 16384): 94.4, (16384, 4096): 95.3, (16384, 16384): 301.9},
}


def _gemm_alone(hw, dtype, m, k, measured_us):
    """The measured Linear time (s) less the activation cast it includes: fp8 its tabled cast; nvfp4
    its bf16 input read and 4-bit values plus scales written (2.5 bytes per element) at the reachable
    bandwidth and one 1.7 us kernel floor (the table's smallest times)."""
    spec = load_hardware(hw)
    if dtype == "fp8":
        return (measured_us - FP8_CAST_US[hw][(m, k)]) * 1e-6
    if dtype == "fp4":
        return measured_us * 1e-6 - m * k * 2.5 / (spec["hbm_bandwidth_gb_s"] * 1e9 * spec["memory_max"]) - 1.7e-6
    return measured_us * 1e-6


@pytest.mark.parametrize("hw, dtype", sorted(MEASURED_US))
def test_blackwell_ceiling_matches_measured_large_gemms(hw, dtype):
    # the ceilings were fitted to the mean of the 675 shapes with M, N, K >= 4096; this grid's
    # geometric mean sits within 4 % of it (fp4 within 5 %). MAMF's best-shape ceilings (0.776 bf16,
    # 0.763 fp8 on b200) put it at 0.88
    ratios = [perfsim.gemm(hw, m, n, k, dtype)["time_s"] / _gemm_alone(hw, dtype, m, k, t)
              for (m, n, k), t in zip(GRID, MEASURED_US[(hw, dtype)], strict=True)]
    assert float(np.exp(np.mean(np.log(ratios)))) == pytest.approx(1.0, abs=0.07)
    assert 0.75 < min(ratios) and max(ratios) < 1.3  # one scalar ceiling: no shape off by more


def test_attention_ceiling_defaults_to_the_gemm_ceiling():
    b200, h100 = load_hardware("b200"), load_hardware("h100-sxm")
    # b200 keeps the best-shape matmul rate (MAMF) its attention shares were fitted against
    assert (b200.attention_max("bf16"), b200.attention_max("fp8")) == (0.776, 0.763)
    assert b200.attention_max("fp4") == 0.776  # no fp4 figure: the spec's attention_max
    assert (h100.attention_max("bf16"), h100.attention_max("fp8")) == (h100.gemm_max("bf16"), h100.gemm_max("fp8"))
    # an fp4 recipe's attention core runs in bf16 at the attention ceiling; its 16-bit GEMMs (the
    # LM head) at the bf16 GEMM ceiling
    v = dtype_values(b200, "fp4")
    assert (v["gemm_max"], v["wide_gemm_max"], v["attn_gemm_max"], v["attn8_gemm_max"]) == (0.441, 0.670, 0.776,
                                                                                              0.763)


def test_trt_llm_prefill_attention_keeps_its_fitted_rate_on_b200():
    # the trt-llm prefill share on blackwell, 0.553, was fitted to B200's measured context-attention
    # tables against 0.776: its long-call rate stays 0.553 x 0.776 x 2,250 = 965.5 TFLOP/s
    c = build(expand({"model": "llama3-8b", "hardware": "b200", "num_devices": 1, "dtype": "bf16", "runtime": "trt-llm"}))
    rate = float(np.asarray(c["prefill_attn_eff"] * c["prefill_attn_gemm_max"] * c["peak_flops"]).ravel()[0])
    assert rate == pytest.approx(0.553 * 0.776 * 2250e12, rel=1e-9)


def test_attention_ceiling_out_of_range_is_refused():
    data = dict(load_yaml(data_dir("hardware_specs") / "b200.yaml"))
    data["device"] = dict(data["device"])
    data["device"]["efficiency"] = dict(data["device"]["efficiency"], attention_max_fp8={"value": 1.2, "source": "t"})
    with pytest.raises(InputError, match=r"attention_max_fp8"):
        parse_hardware(data)
