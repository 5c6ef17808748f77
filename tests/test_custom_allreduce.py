"""An inference engine's own all-reduce inside a node (perfsim.cost.topology.engine_all_reduce)."""

import numpy as np
import pytest

import perfsim
from perfsim.cost.collectives import custom_all_reduce_time
from perfsim.cost.topology import _library_collective, engine_all_reduce, group_collective
from perfsim.errors import InputError
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

# ai-dynamo/aiconfigurator 095f58a51, aic-core/src/aiconfigurator_core/systems/data/<system>/comm/<engine>/
# <version>/custom_allreduce_perf.parquet, CUDA-graph rows: (GPUs, bf16 elements, measured ms)
MEASURED = {
    ("vllm", "h100-sxm"): [  # h100_sxm/comm/vllm/0.24.0
        (2, 32768, 0.004515), (2, 524288, 0.008340), (2, 2097152, 0.020242),
        (4, 32768, 0.005234), (4, 524288, 0.012757), (4, 2097152, 0.030250),
        (8, 32768, 0.006411), (8, 524288, 0.014968), (8, 2097152, 0.030812)],
    ("trt-llm", "h100-sxm"): [  # h100_sxm/comm/trtllm/1.3.0rc20
        (2, 32768, 0.003063), (2, 524288, 0.006104), (2, 2097152, 0.017125),
        (4, 32768, 0.003683), (4, 524288, 0.012911), (4, 2097152, 0.039741),
        (8, 32768, 0.004595), (8, 524288, 0.025965), (8, 2097152, 0.051903)],
    ("sglang", "b200"): [  # b200_sxm/comm/sglang/0.5.14
        (2, 32768, 0.004700), (2, 524288, 0.006774), (2, 2097152, 0.011819),
        (4, 32768, 0.005528), (4, 524288, 0.010299), (4, 2097152, 0.022317),
        (8, 32768, 0.006221), (8, 524288, 0.014970), (8, 2097152, 0.024424)],
}


def _columns(runtime, hardware, tp, devices=None):
    return build(expand({"model": "llama2-7b", "hardware": hardware, "num_devices": devices or tp, "tp": tp,
                         "dtype": "fp16", "runtime": runtime, "mode": "inference", "batch": 1, "prompt_len": 1,
                         "gen_len": 1}))


def _one(x):
    return float(np.ravel(x)[0])


@pytest.mark.parametrize("runtime,hardware", list(MEASURED))
def test_engine_all_reduce_meets_the_measured_kernel_where_the_nccl_price_does_not(runtime, hardware):
    engine, nccl = [], []
    for n, elements, ms in MEASURED[(runtime, hardware)]:
        c = _columns(runtime, hardware, n)
        size = 2.0 * elements
        engine.append(_one(group_collective(c, "all_reduce", size, float(n))) / (ms * 1e-3))
        nccl.append(_one(_library_collective(c, "all_reduce", size, float(n), "auto", 1.0)) / (ms * 1e-3))
    engine, nccl = np.array(engine), np.array(nccl)
    # within the fits' spread (TensorRT-LLM's 8-GPU 1 MB row, 26 us, is as slow as NCCL's: 0.56)
    assert np.all(np.abs(engine - 1.0) < 0.5), engine
    assert np.mean(np.abs(engine - 1.0)) < 0.2, engine
    # NCCL's price of the same buffers is well above the engine's kernel
    assert np.mean(nccl) > 1.5 and np.mean(np.abs(nccl - 1.0)) > 3 * np.mean(np.abs(engine - 1.0)), nccl


def test_one_shot_and_two_shot_by_hand():
    # 1 MB on 8 ranks at 450 GB/s x 0.5, 3 us: one-shot 3 + 7 MB / 225 GB/s = 34.1 us,
    # two-shot 6 + 1.75 MB / 225 GB/s = 13.8 us; on 2 ranks one-shot 3 + 4.44 = 7.44 us < two-shot 10.4 us
    t = custom_all_reduce_time(1e6, np.array([8.0, 2.0, 1.0]), bandwidth=450e9, efficiency=0.5, latency_s=3e-6)
    assert t * 1e6 == pytest.approx([6.0 + 1.75e6 / 225e9 * 1e6, 3.0 + 1e6 / 225e9 * 1e6, 0.0])


def test_nccl_above_the_limit_across_nodes_and_without_the_kernel():
    c = _columns("vllm", "h100-sxm", 4)
    nccl = lambda size, n: _one(_library_collective(c, "all_reduce", size, n, "auto", 1.0))  # noqa: E731
    below, above = 8 * 2**20 - 16, 8 * 2**20
    assert _one(group_collective(c, "all_reduce", below, 4.0)) < nccl(below, 4.0)
    assert _one(group_collective(c, "all_reduce", above, 4.0)) == nccl(above, 4.0)
    # 16 ranks span two nodes; 3 ranks are not a supported world size; other collectives are NCCL's
    c16 = _columns("vllm", "h100-sxm", 16)
    assert _one(group_collective(c16, "all_reduce", 1e6, 16.0)) == _one(
        _library_collective(c16, "all_reduce", 1e6, 16.0, "auto", 1.0))
    assert _one(group_collective(c, "all_reduce", 1e6, 3.0)) == nccl(1e6, 3.0)
    assert _one(group_collective(c, "all_gather", 1e6, 4.0)) == _one(
        _library_collective(c, "all_gather", 1e6, 4.0, "auto", 1.0))
    # a family the engine's kernel was not measured on, and an engine without one
    mi = _columns("vllm", "mi300x", 8)
    assert _one(group_collective(mi, "all_reduce", 1e6, 8.0)) == _one(
        _library_collective(mi, "all_reduce", 1e6, 8.0, "auto", 1.0))
    hf = _columns("hf-eager", "h100-sxm", 4)
    assert _one(group_collective(hf, "all_reduce", 1e6, 4.0)) == _one(
        _library_collective(hf, "all_reduce", 1e6, 4.0, "auto", 1.0))


def test_trt_llm_limit_on_two_ranks():
    c = _columns("trt-llm", "h100-sxm", 2)
    size = 12e6  # below its 2-rank workspace (16 MB), above the 8 MB of larger groups
    applies, engine = engine_all_reduce(c, size, 2.0)
    assert bool(applies) and _one(group_collective(c, "all_reduce", size, 2.0)) == _one(engine)
    c4 = _columns("trt-llm", "h100-sxm", 4)
    assert not bool(engine_all_reduce(c4, size, 4.0)[0])


def test_bad_custom_allreduce_keys():
    small = dict(model="llama2-7b", hardware="h100-sxm", num_devices=2, tp=2, mode="inference", batch=1,
                 prompt_len=8, gen_len=8)
    with pytest.raises(InputError):
        perfsim.estimate(**small, runtime={"base": "vllm", "custom_allreduce_efficiency_on": {"hopper": 1.5}})
    with pytest.raises(InputError):
        perfsim.estimate(**small, runtime={"base": "vllm", "custom_allreduce_latency_us_on": {"hopper": -1.0}})
