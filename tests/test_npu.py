"""NPU/TPU device model: systolic arrays, vector and DMA engines (perfsim/cost/npu.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import perfsim
from perfsim.cost.npu import attention_efficiency, device_gemm_efficiency, systolic_efficiency
from perfsim.cost.roofline import gemm_efficiency
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.hardware import load_hardware, parse_hardware
from perfsim.specs.paths import data_dir
from perfsim.specs.yamlio import load_yaml

ARRAYS = dict(arrays=8, size=128, weight_stationary=True)


def test_systolic_utilisation_falls_for_small_and_odd_shapes():
    big = systolic_efficiency(8192, 8192, 8192, **ARRAYS)
    assert big > 0.99
    # a decode GEMV streams one row past each weight tile, whose load the array waits for
    gemv = systolic_efficiency(1, 8192, 8192, **ARRAYS)
    assert gemv < 1.0 / 128
    # fewer rows than the array is wide: the weight load sets the pace
    assert systolic_efficiency(64, 8192, 8192, **ARRAYS) == pytest.approx(0.5, rel=0.01)
    # one column past a multiple of the array edge costs a nearly empty tile
    assert systolic_efficiency(4096, 129, 4096, **ARRAYS) < 0.55 * systolic_efficiency(4096, 128, 4096, **ARRAYS)
    # too few tiles to fill every array: wave quantisation
    assert systolic_efficiency(4096, 128, 128 * 4, **ARRAYS) < 0.55
    # monotone in the streamed dimension
    ms = np.array([1, 2, 16, 64, 128, 256, 1024, 8192])
    effs = systolic_efficiency(ms, 4096, 4096, **ARRAYS)
    assert np.all(np.diff(effs) > 0)


def test_output_stationary_arrays_suffer_from_short_reductions_instead():
    ws = dict(ARRAYS)
    os_ = dict(ARRAYS, weight_stationary=False)
    # a GEMV: one output row uses one row of an output-stationary array
    assert systolic_efficiency(1, 4096, 4096, **os_) < 1.0 / 100
    # a short reduction (k = 64) leaves an output-stationary array waiting on its input loads
    assert systolic_efficiency(4096, 4096, 64, **os_) == pytest.approx(0.5, rel=0.02)
    assert systolic_efficiency(4096, 4096, 4096, **os_) > 0.99
    # the streamed dimension is not cut into tiles: an odd row count suits weight-stationary arrays,
    # an odd reduction output-stationary ones
    assert systolic_efficiency(200, 4096, 4096, **ws) > 0.99 > 0.8 > systolic_efficiency(200, 4096, 4096, **os_)
    assert systolic_efficiency(4096, 4096, 200, **os_) > 0.99 > 0.8 > systolic_efficiency(4096, 4096, 200, **ws)


def test_attention_matmuls_on_arrays():
    # decode: one query row per KV head (MHA) leaves the arrays nearly idle; a GQA group of 8 fills more
    mha = attention_efficiency(1, 128, 2048, 64, **ARRAYS)
    gqa = attention_efficiency(8, 128, 2048, 64, **ARRAYS)
    prefill = attention_efficiency(2048, 128, 1024, 64, **ARRAYS)
    assert mha < gqa < prefill
    assert prefill > 0.9


@given(m=st.integers(1, 20000), n=st.integers(1, 20000), k=st.integers(1, 20000))
def test_gpu_rows_keep_the_gpu_formula(m, n, k):
    c = build(expand({"model": "llama2-7b", "hardware": "h100-sxm"}))
    assert float(device_gemm_efficiency(c, m, n, k, 1.0, c["gemm_max"])) == float(
        gemm_efficiency(m, n, 1.0, c["tile_m"], c["tile_n"], c["units"], c["gemm_max"], k=k,
                        balance=c["peak_flops"] / (c["hbm_bw"] * c["memory_max"]), reuse=c["tile_reuse"]))


def test_gemm_api_on_npu_and_tpu():
    for hw, dtype in (("npu", "fp16"), ("tpu-v4", "bf16")):
        big = perfsim.gemm(hw, 8192, 8192, 8192, dtype=dtype)["tflops"]
        assert big > 0.9 * 0.923 * {"npu": 262.1, "tpu-v4": 275}[hw]
        assert perfsim.gemm(hw, 16, 8192, 8192, dtype=dtype)["tflops"] < 0.2 * big


def test_decode_on_an_npu_is_dma_bound_and_prefill_matrix_bound():
    r = perfsim.estimate(model="llama2-7b", hardware="npu", dtype="fp16", batch=1, prompt_len=2048, gen_len=64)
    dec, pre = r["breakdown"]["decode"]["engines"], r["breakdown"]["prefill"]["engines"]
    assert dec["dma_s"] > dec["matrix_s"] > 0
    assert pre["matrix_s"] > pre["dma_s"]
    # softmax and elementwise work runs on the vector engine
    assert pre["vector_s"] > 0
    gpu = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=1, prompt_len=2048, gen_len=64)
    assert "engines" not in gpu["breakdown"]["prefill"]  # GPU results keep their keys
    assert r["bottleneck_device"] == "npu" and gpu["bottleneck_device"] == "gpu"


def test_engines_overlap_within_an_op():
    """Per op, the slowest engine sets the time: a layer is never shorter than any engine's busy
    time, nor longer than the engines run one after another."""
    r = perfsim.estimate(model="llama2-7b", hardware="npu", dtype="fp16", batch=64, prompt_len=512, gen_len=64)
    for phase in ("prefill", "decode"):
        b = r["breakdown"][phase]
        e = b["engines"]
        busy = b["gemm_s"] + b["attention_s"] + b["elementwise_s"] - b["launch_s"]
        assert busy >= max(e.values()) - 1e-12
        assert busy <= sum(e.values()) + 1e-12


def test_vector_engine_draws_power_on_npus():
    r = perfsim.estimate(model="llama2-7b", hardware="npu", dtype="fp16", batch=8, prompt_len=1024, gen_len=64)
    e = r["breakdown"]["energy"]
    assert e["vector_j"] > 0
    devices = sum(e[k] for k in ("idle_j", "active_j", "matrix_j", "memory_j", "link_j", "vector_j", "pim_j"))
    assert devices == pytest.approx(r["energy_j"])


def test_sweep_rows_equal_estimates_on_npus():
    axes = dict(model="llama2-7b", hardware=["npu", "tpu-v4"], dtype=["fp16", "bf16"], batch=[1, 64])
    df = perfsim.sweep(**axes)
    for _, row in df.iterrows():
        r = perfsim.estimate(model="llama2-7b", hardware=row["hardware"], dtype=row["dtype"], batch=int(row["batch"]))
        assert r["feasible"] == row["feasible"]
        if r["feasible"]:
            assert r["tpot_s"] == pytest.approx(row["tpot_s"], rel=1e-12)


def _spec(tmp_path, **matrix):
    """The npu spec with its ``engines.matrix`` block replaced."""
    text = (data_dir("hardware_specs") / "npu.yaml").read_text()
    block = "  engines:\n    matrix:\n      source: test\n" + "".join(f"      {k}: {v}\n" for k, v in matrix.items())
    start, end = text.index("  engines:"), text.index("  memory:\n    hbm:")
    path = tmp_path / "custom-npu.yaml"
    path.write_text(text[:start] + block + text[end:])
    return str(path)


def test_engines_block_is_checked(tmp_path):
    spec = load_hardware(_spec(tmp_path, arrays=8, size=128, dataflow="output-stationary"))
    assert spec.engines == {"arrays": 8, "size": 128, "weight_stationary": False}
    with pytest.raises(perfsim.InputError, match=r"dataflow.*did you mean 'weight-stationary'"):
        load_hardware(_spec(tmp_path, arrays=8, size=128, dataflow="weight-stationery"))
    with pytest.raises(perfsim.InputError, match="TFLOP/s"):  # 16 arrays do not give the quoted 262 TFLOP/s
        load_hardware(_spec(tmp_path, arrays=16, size=128))


def test_engines_are_for_systolic_parts():
    data = load_yaml(data_dir("hardware_specs") / "h100-sxm.yaml")
    data = dict(data)
    data["device"] = dict(data["device"])
    data["device"]["engines"] = {"source": "test", "matrix": {"arrays": 132, "size": 16}}
    with pytest.raises(perfsim.InputError, match=r"device\.engines"):
        parse_hardware(data)
