"""Plans that leave a choice to the engine get the engine's own: sequence parallelism with TP in
Megatron-core and NeMo (their recipes always pass it) and torchtitan (its TP plan always shards the
norms over the sequence), none in the 2021 recipe; and interleaved
pipelines over a model the virtual stages do not divide (Megatron-core's uneven split, as in the
Llama 3 405B recipe: 126 layers on 16 stages of 8 chunks)."""

from __future__ import annotations

import pytest

import perfsim

PLAN = dict(model="llama2-13b", hardware="a100-80gb", mode="train", tp=4, pp=2, num_devices=64,
            seq_len=4096, global_batch=256, micro_batch=1, dtype="bf16", recompute="selective")


def test_sequence_parallel_is_the_engines_default():
    for runtime, default in (("megatron", True), ("nemo", True), ("torchtitan", True), ("megatron-2021", False)):
        r = perfsim.estimate(**PLAN, runtime=runtime)
        assert r["plan"]["sp"] is default
        given = perfsim.estimate(**PLAN, runtime=runtime, sp=default)
        assert r["memory_per_device_gib"] == given["memory_per_device_gib"]
    # a plan that says otherwise keeps its word, and sharding the sequence holds less
    off = perfsim.estimate(**PLAN, runtime="megatron", sp=False)
    on = perfsim.estimate(**PLAN, runtime="megatron")
    assert off["plan"]["sp"] is False
    assert on["memory_per_device_gib"]["activations"] < off["memory_per_device_gib"]["activations"]


def test_interleaved_pipeline_takes_an_uneven_split():
    llama = dict(model="llama3.1-405b", hardware="h100-sxm", mode="train", tp=8, pp=16, num_devices=2048,
                 seq_len=8192, global_batch=256, micro_batch=1, dtype="bf16", runtime="megatron",
                 schedule="interleaved", virtual_stages=8)
    r = perfsim.estimate(**llama)
    assert r["feasible"], r["reason"]
    assert max(r["plan"]["pp_layers"]) == 8 and sum(r["plan"]["pp_layers"]) == 126
    # a virtual stage with no layer (nor the embedding or the loss) cannot run
    bad = perfsim.estimate(**dict(llama, virtual_stages=9))
    assert not bad["feasible"] and "virtual stage would hold none" in bad["reason"]
    t = perfsim.timeline(**llama)
    assert t["feasible"] and t["step_time_s"] > 0


def test_dualpipe_hides_the_expert_all_to_alls_behind_the_paired_chunk():
    """DeepSeek-V3 (sec. 3.2): a forward and a backward chunk run side by side, each one's
    all-to-alls beside the other's compute, which keeps 132 - 20 SMs of an H800/H100."""
    plan = dict(model="deepseek-v2-lite", hardware="h100-sxm", mode="train", tp=1, pp=4, ep=8, num_devices=64,
                seq_len=4096, global_batch=256, micro_batch=1, dtype="bf16", runtime="megatron", recompute="full")
    plain = perfsim.estimate(**plan, schedule="1f1b")["breakdown"]["train"]
    dual = perfsim.estimate(**plan, schedule="dualpipe")["breakdown"]["train"]
    n = plain["micro_batches"]
    per_mb = (plain["forward_s"] + plain["backward_s"] + plain["recompute_s"]) / n
    ep = plain["ep_communication_s"] / n
    assert ep > 0
    paired = max(per_mb - ep + ep * 20 / (132 - 20), ep)
    assert (dual["forward_s"] + dual["backward_s"] + dual["recompute_s"]) / n == pytest.approx(paired, rel=1e-9)
    assert dual["ep_communication_s"] == pytest.approx(plain["ep_communication_s"])


def test_inference_engine_follows_the_vendor():
    """TensorRT-LLM is NVIDIA's: inference that names no engine runs it on NVIDIA GPUs and vLLM on
    every other device (CONTRACT), in estimates, sweeps and serve plans alike; an offloaded plan
    still takes FlexGen and training keeps its own defaults."""
    base = dict(model="llama2-7b", mode="inference", batch=4, prompt_len=512, gen_len=64)
    for hardware, engine in (("h100-sxm", "trt-llm"), ("v100-32gb", "trt-llm"), ("mi300x", "vllm"),
                             ("mi250x", "vllm"), ("tpu-v5e", "vllm"), ("npu", "vllm")):
        r = perfsim.estimate(**base, hardware=hardware)
        assert r["plan"]["runtime"] == engine, hardware
        named = perfsim.estimate(**base, hardware=hardware, runtime=engine)
        assert named["tpot_s"] == r["tpot_s"] and named["ttft_s"] == r["ttft_s"], hardware
    frame = perfsim.sweep(**base, hardware=["h100-sxm", "mi300x"])
    assert list(frame["plan.runtime"]) == ["trt-llm", "vllm"]
    served = perfsim.serve(model="llama2-7b", hardware="mi300x", num_requests=8, prompt_len=128, gen_len=16)
    assert served["plan"]["runtime"] == "vllm"
    offloaded = perfsim.estimate(**base, hardware="mi300x", offload_weights="cpu")
    assert offloaded["plan"]["runtime"] == "flexgen"
    train = perfsim.estimate(model="llama2-7b", hardware="mi300x", mode="train", num_devices=8,
                             seq_len=2048, global_batch=64, micro_batch=1)
    assert train["plan"]["runtime"] == "megatron"
