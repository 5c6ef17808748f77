"""estimate / sweep: contract keys, physical sanity, and sweep ↔ estimate consistency."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import perfsim
from perfsim.cli import cli
from perfsim.report import tables
from perfsim.specs.hardware import load_hardware

MEMORY_KEYS = {"weights", "gradients", "optimizer", "model_states", "activations", "kv_cache", "other", "total",
               "capacity"}


def test_llama2_70b_tp8_contract_keys_and_physics():
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama2-70b", "--hardware", "a100-80gb", "--tp", "8",
                                      "--batch", "1", "--prompt-len", "2048", "--gen-len", "256", "--format", "json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    for key in ("feasible", "reason", "memory_per_device_gib", "breakdown", "ttft_s", "tpot_s", "e2e_latency_s",
                "throughput_tokens_per_s", "kv_cache_capacity_tokens", "max_concurrency"):
        assert key in r
    assert MEMORY_KEYS <= set(r["memory_per_device_gib"])
    assert r["feasible"] is True
    assert 15.5 < r["memory_per_device_gib"]["weights"] < 16.5  # 69 B params x 2 B / 8
    bound = r["breakdown"]["decode"]["hbm_bound_s"]
    # above the HBM bound, not below, and not far off (Splitwise measured 44.9 ms per decode step of this
    # deployment at prompt 512, 5.3 x the bound: validation case I-SPLIT-llama2-70b-a100-TP8-p512-b1-tpot)
    assert bound < r["tpot_s"] < 3.0 * bound


def test_train_keys():
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", tp=8, seq_len=2048,
                         global_batch=8, recompute="full")
    for key in ("step_time_s", "tokens_per_s", "model_flops_per_step", "mfu", "hfu", "model_tflops_per_device",
                "hardware_tflops_per_device", "bubble_fraction"):
        assert key in r
    assert 0 < r["mfu"] < r["hfu"] < 1


# Llama-2-7B from its config: hidden 4096, 32 layers, FFN 11008, vocabulary 32000, untied embeddings
_H, _LAYERS, _FFN, _VOCAB = 4096, 32, 11008, 32000
_NORMS = 2 * _LAYERS * _H + _H  # two RMSNorm weights per layer and the final one
_PARAMS = 2 * _VOCAB * _H + _LAYERS * (4 * _H * _H + 3 * _H * _FFN) + _NORMS  # 6,738,415,616


@pytest.mark.parametrize("tp,dp", [(1, 8), (2, 4)])
@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_model_states_by_hand(tp, dp, zero):
    """bf16 weights (2 B), fp32 gradients (4 B: Megatron and torchtitan reduce in fp32), fp32
    master weights with Adam's two fp32 moments (12 B); ZeRO shards the optimizer state (stage 1),
    the gradients (2) and the weights (3) over the dp ranks, TP splits every matrix."""
    r = perfsim.estimate(model="llama2-7b", hardware="h100-sxm", mode="train", tp=tp, dp=dp, zero=zero,
                         global_batch=8 * dp)
    assert _PARAMS == 6_738_415_616
    per_device = (_PARAMS - _NORMS) / tp + _NORMS  # Megatron keeps the norms whole on every TP rank
    weights = 2 * per_device / (dp if zero >= 3 else 1)
    grads = 4 * per_device / (dp if zero >= 2 else 1)
    optimizer = 12 * per_device / (dp if zero >= 1 else 1)
    mem = r["memory_per_device_gib"]
    gib = 2**30
    # rel 1e-4: perfsim splits the norms over TP as well (0.004 % of the weights at tp=2)
    assert mem["weights"] == pytest.approx(weights / gib, rel=1e-4)
    assert mem["gradients"] == pytest.approx(grads / gib, rel=1e-4)
    assert mem["optimizer"] == pytest.approx(optimizer / gib, rel=1e-4)
    assert mem["model_states"] == pytest.approx((weights + grads + optimizer) / gib, rel=1e-4)


def test_model_flops_follow_megatron_eq3():
    """hardware FLOPs with full recompute equal Narayanan et al. eq. 3 for a GPT model."""
    h, layers, s, V, B = 4096, 36, 2048, 51200, 512
    model = {"hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": 32, "intermediate_size": 4 * h,
             "vocab_size": V, "hidden_act": "gelu", "tie_word_embeddings": True}
    r = perfsim.estimate(model=model, hardware="a100-80gb", mode="train", tp=8, dp=16, seq_len=s, global_batch=B,
                         recompute="full")
    eq3 = 96 * B * s * layers * h**2 * (1 + s / (6 * h) + V / (16 * layers * h))
    hw_flops = r["hardware_tflops_per_device"] * 1e12 * r["step_time_s"] * r["num_devices"]
    assert hw_flops == pytest.approx(eq3, rel=0.01)


def test_sweep_rows_equal_estimates():
    df = perfsim.sweep(model=["llama2-7b", "mistral-7b"], hardware="a100-80gb", batch=[1, 16], tp=[1, 2],
                       prompt_len=512, gen_len=32)
    assert len(df) == 8
    for i in (0, 5, 7):
        row = df.iloc[i]
        r = perfsim.estimate(model=str(row["model"]), hardware="a100-80gb", batch=int(row["batch"]),
                             tp=int(row["tp"]), prompt_len=512, gen_len=32)
        assert r["tpot_s"] == pytest.approx(row["tpot_s"], rel=1e-12)
        assert r["memory_per_device_gib"]["total"] == pytest.approx(row["memory_per_device_gib.total"], rel=1e-12)


def test_sweep_keeps_infeasible_rows():
    df = perfsim.sweep(model="llama2-70b", hardware="a100-80gb", tp=[1, 8])
    assert list(df["feasible"]) == [False, True]
    assert "does not fit" in df["reason"].iloc[0]


def test_whatif_bandwidth_sweep_is_one_call_and_monotonic():
    df = perfsim.sweep(model="llama2-7b", hardware={"base": "h100-sxm", "hbm_bandwidth_gb_s": [1000, 2000, 3350, 4800]},
                       batch=1, prompt_len=1024, gen_len=64)
    assert len(df) == 4
    assert np.all(np.diff(df["tpot_s"].to_numpy()) < 0)


def test_breakdown_sums_to_total():
    r = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", tp=4, batch=8)
    for phase in ("prefill", "decode"):
        b = r["breakdown"][phase]
        parts = b["gemm_s"] + b["attention_s"] + b["elementwise_s"] + b["communication_s"] + b["pipeline_s"] + b["overhead_s"]
        parts += b["throttle_s"]  # the time a clock lowered to the power limit adds
        assert parts == pytest.approx(b["total_s"], rel=1e-9)
    assert r["ttft_s"] == pytest.approx(r["breakdown"]["prefill"]["total_s"])


def test_moe_decode_reads_only_touched_experts():
    small = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", tp=2, batch=1, prompt_len=128, gen_len=16)
    dense_like = perfsim.estimate(model="mixtral-8x7b", hardware="h100-sxm", tp=2, batch=64, prompt_len=128, gen_len=16)
    assert small["tpot_s"] < 0.6 * dense_like["tpot_s"]


def test_deepseek_v3_mla_kv_cache_is_small():
    ds = perfsim.estimate(model="deepseek-v3", hardware="h200", tp=8, batch=1, prompt_len=4096, gen_len=1)
    # MLA caches 512 + 64 values per token per layer: 61 layers x 576 x 2 B x 4097 tokens
    assert ds["memory_per_device_gib"]["kv_cache"] == pytest.approx(61 * 576 * 2 * 4097 / 2**30, rel=1e-6)


def test_mla_decode_attends_the_latent_in_absorbed_form():
    """MLA decode attends the cached latent directly (W^UK and W^UV absorbed): every head does
    2 (kv_lora + qk_rope) + 2 kv_lora FLOPs per cached token; a prefill decompresses and attends
    with the per-head qk_nope + qk_rope and v_head_dim."""
    from perfsim.graph.transformer import Pass, attention_ops
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    c = build(expand({"model": "deepseek-v3", "hardware": "h200", "tp": 8, "mode": "inference", "batch": 1,
                      "prompt_len": 1, "gen_len": 1}))

    def core(p):
        return next(op for op in attention_ops(c, p) if op.name == "attention")

    decode = core(Pass(tokens=4.0, seqs=4.0, q_len=1.0, kv_len=1000.0, causal=0.0, logits_tokens=4.0))
    assert float(np.asarray(decode.flops)) == pytest.approx(2.0 * 4 * 1000 * (128 / 8) * (512 + 64 + 512))
    prefill = core(Pass(tokens=1000.0, seqs=1.0, q_len=1000.0, kv_len=1000.0, causal=1.0, logits_tokens=1.0))
    # causal: (kv + 1) / 2 keys a query on average
    assert float(np.asarray(prefill.flops)) == pytest.approx(2.0 * 1000 * 500.5 * (128 / 8) * (192 + 128))
    # a GQA model is unchanged by the absorbed form
    g = build(expand({"model": "llama2-70b", "hardware": "h200", "mode": "inference", "batch": 1, "prompt_len": 1,
                      "gen_len": 1}))
    gqa = next(op for op in attention_ops(g, Pass(tokens=4.0, seqs=4.0, q_len=1.0, kv_len=1000.0, causal=0.0,
                                                  logits_tokens=4.0)) if op.name == "attention")
    assert float(np.asarray(gqa.flops)) == pytest.approx(2.0 * 4 * 1000 * 64 * 256)


def test_microbenchmark_calls():
    g = perfsim.gemm("a100-80gb", 8192, 8192, 8192, "fp16")
    assert 200 < g["tflops"] <= 312
    c = perfsim.collective("a100-80gb", "all_reduce", 2**30, 8)
    assert 0 < c["busbw_gb_s"] <= 300 and c["algbw_gb_s"] == pytest.approx(c["busbw_gb_s"] * 8 / 14)
    m = perfsim.memcpy("a100-80gb", 2**28, "hbm", "hbm")
    assert 0 < m["bandwidth_gb_s"] < 2039


def test_gemm_honours_whatif_bandwidth_and_peak():
    spec = load_hardware("h100-sxm")
    launch = spec["kernel_launch_us"] * 1e-6
    # a GEMV reads its 8192 x 8192 bf16 weight: memory-bound, so its time is the bytes over the
    # what-if bandwidth at the spec's reachable fraction, plus the stream's fixed time and one launch
    plain = perfsim.gemm("h100-sxm", 1, 8192, 8192, "bf16")
    wide = perfsim.gemm({"base": "h100-sxm", "hbm_bandwidth_gb_s": 6700}, 1, 8192, 8192, "bf16")
    moved = 2.0 * (8192 + 8192 * 8192 + 8192)
    fixed = launch + spec["gemm_stream_latency_us"] * 1e-6
    assert plain["time_s"] == pytest.approx(moved / (spec["hbm_bandwidth_gb_s"] * 1e9 * spec["memory_max"]) + fixed)
    assert wide["time_s"] == pytest.approx(moved / (6700e9 * spec["memory_max"]) + fixed)
    assert wide["time_s"] < plain["time_s"]
    # a large square GEMM is compute-bound: its time above the launch scales with 1 / peak
    plain = perfsim.gemm("h100-sxm", 8192, 8192, 8192, "bf16")
    fast = perfsim.gemm({"base": "h100-sxm", "peak_tflops": 2000}, 8192, 8192, 8192, "bf16")
    assert fast["time_s"] < plain["time_s"]
    assert fast["time_s"] - launch == pytest.approx((plain["time_s"] - launch) * spec.peak("bf16") / 2000)
    # no what-if, or one the GEMM does not read: the same result
    for same in ({"base": "h100-sxm"}, {"base": "h100-sxm", "scaleout_gb_s": 100}):
        assert perfsim.gemm(same, 8192, 8192, 8192, "bf16") == plain


STEP_PARTS = ("forward_s", "backward_s", "recompute_s", "bubble_s", "pipeline_p2p_s", "dp_exposed_s", "cp_exposed_s",
              "optimizer_s", "offload_s", "overhead_s", "throttle_s")


@pytest.mark.parametrize("plan", [dict(tp=2, pp=2, dp=2, global_batch=16),
                                  dict(dp=8, zero=3, global_batch=32, offload_optimizer="cpu"),
                                  dict(cp=2, dp=4, seq_len=16384, global_batch=8),
                                  dict(pp=4, dp=2, global_batch=32, schedule="interleaved", virtual_stages=2)])
def test_the_step_is_the_sum_the_table_names(plan):
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", **plan)
    assert r["step_time_s"] == pytest.approx(sum(r["breakdown"]["train"][k] for k in STEP_PARTS), rel=1e-12)
    assert all(k.removesuffix("_s").replace("_", " ") in tables.estimate_table(r) for k in STEP_PARTS)


def test_durations_read_well():
    assert tables._fmt_s(-0.0) == "0 us" and tables._fmt_s(-1e-12) == "0 us"
    assert tables._fmt_s(-0.255) == "-255.00 ms" and tables._fmt_s(2.5) == "2.500 s"


def test_estimate_help_shows_a_default_for_every_option():
    import re

    text = CliRunner().invoke(cli, ["estimate", "--help"], terminal_width=200).output
    blocks = re.split(r"\n  (?=-)", text.split("Options:")[1])
    missing = [b.split()[0] for b in blocks if b.strip() and "default" not in b and "required" not in b
               and "--help" not in b]
    assert not missing, missing
    assert "--recompute [none|selective|full|auto]" in text and "[default: (auto)]" in text


def test_an_option_of_the_other_mode_is_refused_with_what_this_mode_takes():
    out = CliRunner().invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--seq-len", "4096"])
    assert out.exit_code == 2 and "--prompt-len" in out.output and "Traceback" not in out.output
    with pytest.raises(perfsim.InputError, match="global_batch"):
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", batch=4)
    # a sweep may span both modes, and a value equal to the default is no request
    assert len(perfsim.sweep(model="llama2-7b", hardware="a100-80gb", mode=["inference", "train"], seq_len=1024)) == 2
    assert perfsim.estimate(model="llama2-7b", hardware="a100-80gb", offload_optimizer="none")["feasible"]
