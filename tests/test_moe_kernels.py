"""An engine's fused MoE kernels: the routed-expert GEMMs at the engine's own share of the GEMM
ceiling and of the streaming bandwidth (runtime ``moe_gemm_efficiency_on`` /
``moe_memory_efficiency_on``, per architecture family)."""

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.errors import InputError
from perfsim.graph.transformer import Gemm
from perfsim.plan.columns import build
from perfsim.plan.grid import expand
from perfsim.specs.runtime import load_runtime


def _columns(hardware="h200", runtime="trt-llm"):
    return build(expand({"model": "deepseek-v3", "hardware": hardware, "num_devices": 8, "tp": 1, "dp": 8, "ep": 8,
                         "dtype": "fp8", "runtime": runtime}))


def test_trt_llm_profile_gives_its_moe_kernels_per_family():
    assert (float(_columns()["moe_gemm_eff"]), float(_columns()["moe_memory_eff"])) == (0.345, 0.78)
    assert (float(_columns("b200")["moe_gemm_eff"]), float(_columns("b200")["moe_memory_eff"])) == (0.326, 0.40)
    # no figure for the family, or an engine without one: the device's own ceilings
    assert (float(_columns("a100-80gb")["moe_gemm_eff"]), float(_columns("a100-80gb")["moe_memory_eff"])) == (1.0, 1.0)
    assert float(_columns(runtime="vllm")["moe_gemm_eff"]) == 1.0


def test_expert_gemms_run_at_the_engine_share_and_dense_ones_do_not():
    c = _columns()
    launch, bw, mem, peak = (float(c[k]) for k in ("launch_s", "hbm_bw", "memory_max", "peak_flops"))
    # 32 experts of 4096 x 7168 fp8 weights, 8 tokens each: the weights bound it, read at
    # memory_max x 0.78 of the bandwidth (inputs 2-byte activations, 2-byte outputs)
    moved = 32 * (8 * 7168 * 2.0 + 4096 * 7168 * 1.0 + 8 * 4096 * 2.0)
    expert = price(c, [Gemm("experts_up", 8.0, 4096.0, 7168.0, groups=32.0, expert=True)])
    assert float(expert["total_s"]) == pytest.approx(moved / (bw * mem * 0.78) + launch, rel=1e-9)
    # a dense GEMM adds its stream's fixed fill and drain; the engine's fitted expert share holds its own
    dense = price(c, [Gemm("x", 8.0, 4096.0, 7168.0, groups=32.0)])
    assert float(dense["total_s"]) == pytest.approx(moved / (bw * mem) + float(c["gemm_stream_s"]) + launch, rel=1e-9)
    # the work is the same either way: bytes and FLOPs the power model counts do not change
    for key in ("hbm_bytes", "flops"):
        assert float(expert[key]) == pytest.approx(float(dense[key]), rel=1e-9)
    # 4096 tokens per expert: compute-bound, 1 / 0.345 as long (whole tiles and waves both ways)
    big_e = price(c, [Gemm("experts_up", 4096.0, 4096.0, 7168.0, groups=32.0, expert=True)])
    big_d = price(c, [Gemm("x", 4096.0, 4096.0, 7168.0, groups=32.0)])
    # (DeepSeek-V3's fp8 checkpoint is block-scaled: its dense GEMMs reach the engine's block-scaled share)
    block = float(c["block_gemm_eff"])
    compute = 2.0 * 4096 * 4096 * 7168 * 32 / (peak * float(c["gemm_max"]) * block)
    # 32 x 32 tiles of 128 x 128 in each of 32 experts: 32,768 tiles in 249 waves of 132 SMs
    assert float(big_d["total_s"]) - launch == pytest.approx(compute * 249 * 132 / 32768, rel=1e-9)
    assert float(big_e["total_s"]) - launch == pytest.approx((float(big_d["total_s"]) - launch) * block / 0.345,
                                                             rel=1e-9)


def test_moe_efficiency_out_of_range_is_an_input_error():
    with pytest.raises(InputError, match="moe_gemm_efficiency_on"):
        load_runtime({"base": "trt-llm", "moe_gemm_efficiency_on": {"hopper": 1.5}})
    with pytest.raises(InputError):
        load_runtime({"base": "trt-llm", "moe_memory_efficiency_on": {"hopper": 0.0}})
    # a valid what-if replaces the family's figure
    spec = load_runtime({"base": "trt-llm", "moe_gemm_efficiency_on": {"hopper": 0.5}})
    assert spec.columns()["moe_gemm_eff_hopper"] == 0.5
    assert np.isclose(spec.columns()["moe_memory_eff_hopper"], 0.78)


def _exchange_ops(hardware, dtype="fp8", runtime="trt-llm", tp=1, dp=4, ep=4):
    from perfsim.graph.transformer import Pass, moe_mlp_ops

    c = build(expand({"model": "deepseek-v3", "hardware": hardware, "num_devices": tp * dp, "tp": tp, "dp": dp,
                      "ep": ep, "dtype": dtype, "runtime": runtime}))
    p = Pass(tokens=100.0, seqs=100.0, q_len=1.0, kv_len=1000.0, causal=0.0, logits_tokens=100.0)
    return {op.name: (op.op, float(np.asarray(op.size_bytes))) for op in moe_mlp_ops(c, p) if op.name.startswith("ep_")}


def test_attention_dp_experts_gather_and_reduce_scatter_the_group_tokens():
    """TensorRT-LLM with attention DP: every rank all-gathers the 4 x 100 tokens of its group (16-bit
    on Hopper, NVFP4 with its scales on Blackwell) and reduce-scatters their 16-bit outputs; no
    all-to-all. On an NVL72 domain, with TP attention, or on an engine without the key: all-to-alls."""
    h = 7168
    ops = _exchange_ops("h200")
    assert ops["ep_gather"] == ("all_gather", pytest.approx(400 * h * 2.0))
    assert ops["ep_reduce_scatter"] == ("reduce_scatter", pytest.approx(400 * h * 2.0))
    assert ops["ep_dispatch"][1] == 0.0 and ops["ep_combine"][1] == 0.0
    assert _exchange_ops("b200", "fp4")["ep_gather"][1] == pytest.approx(400 * h * (0.5 + 1.0 / 16.0))
    for ops in (_exchange_ops("gb200", "fp4"), _exchange_ops("h200", runtime="vllm"),
                _exchange_ops("h200", tp=4, dp=1, ep=4)):
        assert ops["ep_gather"][1] == 0.0 and ops["ep_reduce_scatter"][1] == 0.0
        assert ops["ep_dispatch"][1] > 0.0 and ops["ep_combine"][1] > 0.0
    # the 16-bit engines send and return the same routed copies; on Blackwell the engine sends them
    # as NVFP4 (9/16 byte) and gets 16-bit outputs back
    vllm = _exchange_ops("h200", runtime="vllm")
    assert vllm["ep_dispatch"][1] == pytest.approx(vllm["ep_combine"][1])
    nvl72 = _exchange_ops("gb200", "fp4")
    assert nvl72["ep_dispatch"][1] == pytest.approx(nvl72["ep_combine"][1] * (0.5 + 1.0 / 16.0) / 2.0)


def test_unknown_moe_exchange_is_an_input_error():
    with pytest.raises(InputError, match="moe_exchange"):
        load_runtime({"base": "trt-llm", "moe_exchange": "broadcast"})
    with pytest.raises(InputError):
        load_runtime({"base": "trt-llm", "moe_dispatch_quantized_on": {"hopper": 0.5}})
