"""The fixed time of a GEMM's operand stream (``gemm_stream_latency_us``) against NVIDIA's measured
small-M GEMM tables: a weight-streaming GEMM (a decode step's) ramps to the copy bandwidth."""

import numpy as np
import pytest

import perfsim
from perfsim.cost.price import price
from perfsim.errors import InputError
from perfsim.graph.transformer import Gemm
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.hardware import load_hardware, parse_hardware
from perfsim.specs.paths import data_dir
from perfsim.specs.yamlio import load_yaml

#: M x N x K: M 1, 32, 128 over weights of 2, 16, 64 and 256 MB (bf16), in this order
GRID = [(m, n, k) for m in (1, 32, 128) for n, k in ((1024, 1024), (2048, 4096), (4096, 8192), (8192, 16384))]

#: NVIDIA's measured TensorRT-LLM Linear times (us; bf16, replayed from a CUDA graph, 3 warm-ups, mean of
#: 6 replays, 1-5 copies of a small weight so that they span the L2) on that grid: ai-dynamo/aiconfigurator
#: 095f58a51 aic-core/src/aiconfigurator_core/systems/data/<system>/gemm/trtllm/<version>/gemm_perf.parquet
#: (collector/trtllm/collect_gemm.py); a100_sxm 1.0.0, the others 1.3.0rc20
MEASURED_US = {
    "a100-80gb": (4.78, 18.16, 48.64, 166.71, 6.72, 16.11, 50.86, 180.29, 7.92, 20.96, 61.41, 193.84),
    "h100-sxm": (4.05, 10.27, 30.31, 93.55, 4.09, 10.46, 29.92, 95.75, 4.25, 11.2, 29.43, 111.41),
    "h200": (7.67, 8.94, 22.62, 67.47, 4.08, 9.19, 24.09, 69.96, 4.29, 10.39, 26.21, 71.08),
    "b200": (4.68, 8.43, 15.67, 47.74, 3.46, 7.9, 16.29, 47.9, 3.36, 7.41, 16.45, 51.17),
    "gb200": (4.63, 5.9, 14.78, 49.48, 3.49, 7.9, 14.63, 52.52, 3.02, 7.26, 15.27, 52.97),
}
GRAPH_SPACING_US = 1.5  # kernels replayed from a CUDA graph (runtimes/trt-llm.yaml kernel_launch_us)


def _ratios(hw, with_stream=True):
    """Model over measured time on the grid, the eager launch perfsim.gemm charges swapped for the
    graph's kernel spacing; ``with_stream=False``: the copy-bandwidth model without the fixed time."""
    spec = load_hardware(hw)
    shift = GRAPH_SPACING_US - spec["kernel_launch_us"] - (0.0 if with_stream else spec["gemm_stream_latency_us"])
    model = np.array([perfsim.gemm(hw, m, n, k, "bf16")["time_s"] * 1e6 + shift for m, n, k in GRID])
    return model / np.array(MEASURED_US[hw])


@pytest.mark.parametrize("hw", sorted(MEASURED_US))
def test_small_m_gemms_near_measured(hw):
    # fitted over all the tabled bf16 shapes (M 1-32768); on this grid the geometric mean is 0.82-0.93:
    # the measured ramp is more gradual than one fixed time (16-256 MB weights keep 0.85-0.92)
    ratios = _ratios(hw)
    assert 0.8 < float(np.exp(np.mean(np.log(ratios)))) < 1.1
    assert 0.5 < min(ratios) and max(ratios) < 1.3


@pytest.mark.parametrize("hw", sorted(MEASURED_US))
def test_copy_bandwidth_alone_is_too_fast(hw):
    # bytes / (bandwidth x memory_max): 0.63-0.73 of the measured time on this grid
    assert float(np.exp(np.mean(np.log(_ratios(hw, with_stream=False))))) < 0.75


def test_fixed_time_adds_to_the_memory_side_only():
    spec = load_hardware("h100-sxm")
    bw = spec["hbm_bandwidth_gb_s"] * 1e9 * spec["memory_max"]
    fixed = (spec["kernel_launch_us"] + spec["gemm_stream_latency_us"]) * 1e-6
    # a GEMV streams its 8192 x 8192 bf16 weight: bytes over the bandwidth, the stream's 2 us, one launch
    moved = 2.0 * (8192 + 8192 * 8192 + 8192)
    assert perfsim.gemm("h100-sxm", 1, 8192, 8192, "bf16")["time_s"] == pytest.approx(moved / bw + fixed, rel=1e-12)
    # a large square GEMM is compute-bound: the stream's fixed time hides behind the compute
    plain = perfsim.gemm("h100-sxm", 8192, 8192, 8192, "bf16")["time_s"]
    no_fill = perfsim.gemm(_without_stream("h100-sxm"), 8192, 8192, 8192, "bf16")["time_s"]
    assert plain == no_fill


def _without_stream(name):
    data = dict(load_yaml(data_dir("hardware_specs") / f"{name}.yaml"))
    data["device"] = dict(data["device"])
    data["device"]["efficiency"] = {k: v for k, v in data["device"]["efficiency"].items()
                                    if k != "gemm_stream_latency_us"}
    return parse_hardware(data)


def test_fill_time_moves_no_bytes():
    # the device-memory traffic the power model counts is the GEMM's bytes, whatever its fixed time
    c = build(expand({"model": "llama3-8b", "hardware": "h100-sxm", "num_devices": 1, "dtype": "bf16",
                      "runtime": "trt-llm"}))
    out = price(c, [Gemm("x", 8.0, 4096.0, 4096.0)])
    moved = 8 * 4096 * 2.0 + 4096 * 4096 * 2.0 + 8 * 4096 * 2.0
    assert float(out["hbm_bytes"]) == pytest.approx(moved, rel=1e-12)
    assert float(c["gemm_stream_s"]) == pytest.approx(2.0e-6)


def test_devices_without_a_figure_add_nothing():
    assert load_hardware("v100-32gb")["gemm_stream_latency_us"] == 0.0


def test_negative_stream_latency_is_refused():
    data = dict(load_yaml(data_dir("hardware_specs") / "h100-sxm.yaml"))
    data["device"] = dict(data["device"])
    data["device"]["efficiency"] = dict(data["device"]["efficiency"],
                                        gemm_stream_latency_us={"value": -1.0, "source": "t"})
    with pytest.raises(InputError, match=r"gemm_stream_latency_us"):
        parse_hardware(data)
