"""Offloaded inference policy: ``auto`` placements searched for throughput within the tiers' memory."""

import pytest

import perfsim
from perfsim.plan.offload import AUTO_CHOICES, canonical, fractions, spelled

INFER = dict(model="opt-30b", hardware="rtx-a6000", dtype="fp16", batch=64, prompt_len=512, gen_len=32)


def test_auto_is_one_spelling_and_only_where_searched():
    assert canonical(" AUTO ", "offload_kv") == "auto"
    with pytest.raises(perfsim.InputError) as info:
        perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", offload_optimizer="auto")
    assert info.value.field == "offload_optimizer"


def test_serve_takes_one_placement_not_a_search():
    with pytest.raises(perfsim.InputError) as info:
        perfsim.serve(model="opt-30b", hardware="rtx-a6000", num_requests=8, prompt_len=128, gen_len=8,
                      offload_kv="auto")
    assert info.value.field == "offload_kv"


def test_auto_in_training_is_an_infeasible_plan_with_its_reason():
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", offload_weights="auto")
    assert r["feasible"] is False
    assert "inference" in r["reason"]


def test_the_chosen_placement_is_priced_as_if_given():
    r = perfsim.estimate(**INFER, offload_weights="auto", offload_kv="auto", offload_activations="auto")
    assert r["feasible"]
    plan = {k: r["plan"][k] for k in ("offload_weights", "offload_kv", "offload_activations")}
    assert "auto" not in plan.values()
    again = perfsim.estimate(**INFER, **plan, runtime=r["plan"]["runtime"])
    assert again["throughput_tokens_per_s"] == pytest.approx(r["throughput_tokens_per_s"], rel=1e-12)
    assert again["memory_per_tier_gib"] == pytest.approx(r["memory_per_tier_gib"], rel=1e-12)


def test_routed_experts_follow_the_searched_weights():
    moe = dict(model="mixtral-8x7b", hardware="rtx-a6000", dtype="fp16", batch=16, prompt_len=512, gen_len=32)
    r = perfsim.estimate(**moe, offload_weights="auto")
    assert r["feasible"]
    again = perfsim.estimate(**moe, offload_weights=r["plan"]["offload_weights"], runtime=r["plan"]["runtime"])
    assert again["throughput_tokens_per_s"] == pytest.approx(r["throughput_tokens_per_s"], rel=1e-12)


@pytest.mark.parametrize("weights", [spelled(s) for s in AUTO_CHOICES["offload_weights"][::3]])
@pytest.mark.parametrize("kv", ["none", "cpu"])
def test_no_candidate_that_fits_beats_the_search(weights, kv):
    best = perfsim.estimate(**INFER, offload_weights="auto", offload_kv="auto", offload_activations="auto")
    trial = perfsim.estimate(**INFER, offload_weights=weights, offload_kv=kv, runtime="flexgen")
    if trial["feasible"]:
        assert trial["throughput_tokens_per_s"] <= best["throughput_tokens_per_s"] * (1 + 1e-12)


def test_a_model_that_fits_the_device_stays_there():
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", batch=8, prompt_len=512, gen_len=32,
                         offload_weights="auto", offload_kv="auto")
    assert (r["plan"]["offload_weights"], r["plan"]["offload_kv"]) == ("none", "none")
    assert r["memory_per_tier_gib"]["cpu"] == 0.0


def test_the_search_moves_state_off_a_device_too_small_for_it():
    # OPT-30B's 60 GB of fp16 weights cannot stay on a 48 GB card: the search puts some elsewhere
    r = perfsim.estimate(**dict(INFER, batch=8), offload_weights="auto")
    assert r["feasible"]
    assert fractions(r["plan"]["offload_weights"])[0] < 48 * 2**30 / 60e9


def test_nothing_fits_is_infeasible_not_an_error():
    # a 1 GiB device cannot hold the double buffers of two of OPT-175B's 3.6 GB layers
    hw = {"base": "rtx-a6000", "hbm_capacity_gib": 1}
    r = perfsim.estimate(model="opt-175b", hardware=hw, dtype="fp16", batch=8, prompt_len=512, gen_len=32,
                         offload_weights="auto", offload_kv="auto")
    assert r["feasible"] is False
    assert r["reason"]


def test_sweep_rows_match_single_estimates():
    df = perfsim.sweep(**dict(INFER, batch=[16, 64]), offload_weights=["auto", "cpu"], offload_kv="auto")
    for _, row in df.iterrows():
        one = perfsim.estimate(**dict(INFER, batch=int(row["batch"])), offload_weights=row["offload_weights"],
                               offload_kv="auto")
        assert row["throughput_tokens_per_s"] == pytest.approx(one["throughput_tokens_per_s"], rel=1e-12)


# --- the engine's copy paths of the KV cache --------------------------------------------------------

KV_PLAN = dict(INFER, batch=32, offload_weights="cpu", offload_kv="cpu")


def _flexgen(**keys):
    return {"base": "flexgen", "offloaded_kv_attention": "device", **keys}


def test_a_slow_cache_store_path_sets_the_prefill():
    # OPT-30B: 48 layers x 2 (K, V) x 7168 x 2 B per token; 32 prompts of 512 tokens
    prompt_kv = 32 * 512 * 48 * 2 * 7168 * 2
    r = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_store_gb_s=0.5))
    pre = r["breakdown"]["prefill"]
    compute = pre["total_s"] - pre["offload_s"]
    # the stores run beside the compute, layer by layer: the last layer's compute is left over
    assert prompt_kv / 0.5e9 <= r["ttft_s"] <= prompt_kv / 0.5e9 + compute
    assert pre["transfer_s"] == pytest.approx(prompt_kv / 0.5e9, rel=1e-12)
    # a store path faster than the link changes nothing: the link sets the time
    fast = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_store_gb_s=1000.0))
    faster = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_store_gb_s=2000.0))
    assert fast["ttft_s"] == pytest.approx(faster["ttft_s"], rel=1e-12)
    assert fast["ttft_s"] < r["ttft_s"]


@pytest.mark.parametrize("rate", [0.2, 1.0, 5.0])
def test_a_slower_store_path_is_never_faster(rate):
    slow = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_store_gb_s=rate))
    fast = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_store_gb_s=rate * 2))
    assert slow["e2e_latency_s"] >= fast["e2e_latency_s"]


def test_a_pageable_cache_is_staged_and_never_faster():
    pinned = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_cache_pinned=True))
    pageable = perfsim.estimate(**KV_PLAN, runtime=_flexgen(kv_cache_pinned=False))
    assert pageable["tpot_s"] > pinned["tpot_s"]
    # the cache is loaded every decode step: staging moves each of its bytes twice more in host memory
    cache = 32 * (512 + 16) * 48 * 2 * 7168 * 2
    extra = pageable["tpot_s"] - pinned["tpot_s"]
    host_bw = 204.8e9 * 0.81  # rtx-a6000's host memory, STREAM efficiency
    assert extra == pytest.approx(2 * cache / host_bw, rel=0.05)


def test_a_store_rate_must_be_positive():
    with pytest.raises(perfsim.InputError) as info:
        perfsim.estimate(**KV_PLAN, runtime={"base": "flexgen", "kv_store_gb_s": 0})
    assert "kv_store_gb_s" in str(info.value)


def test_hidden_states_take_the_store_path_after_the_cache():
    # parked hidden states of OPT-30B's prefill: 48 layers x 32 x 512 tokens x 7168 x 2 B
    hidden = 48 * 32 * 512 * 7168 * 2
    prompt_kv = 2 * hidden
    plan = dict(KV_PLAN, offload_activations="cpu")
    r = perfsim.estimate(**plan, runtime=_flexgen(kv_store_gb_s=0.5, hidden_store_gb_s=0.25))
    assert r["breakdown"]["prefill"]["transfer_s"] == pytest.approx(prompt_kv / 0.5e9 + hidden / 0.25e9, rel=1e-12)
    kept = perfsim.estimate(**dict(KV_PLAN, offload_activations="none"),
                            runtime=_flexgen(kv_store_gb_s=0.5, hidden_store_gb_s=0.25))
    assert kept["breakdown"]["prefill"]["transfer_s"] == pytest.approx(prompt_kv / 0.5e9, rel=1e-12)


def test_a_decode_without_prefetch_adds_its_loads_to_its_compute():
    plan = dict(INFER, batch=8, offload_weights="cpu")  # cache on the device: the weights stream
    overlapped = perfsim.estimate(**plan, runtime=_flexgen(decode_offload_prefetch=1.0))
    serial = perfsim.estimate(**plan, runtime=_flexgen(decode_offload_prefetch=0.0))
    dec = serial["breakdown"]["decode"]
    compute = dec["total_s"] - dec["offload_s"]
    assert dec["total_s"] == pytest.approx(compute + dec["transfer_s"], rel=1e-9)
    odec = overlapped["breakdown"]["decode"]
    assert odec["total_s"] < dec["total_s"]
    assert odec["total_s"] >= max(odec["transfer_s"], odec["total_s"] - odec["offload_s"])
    # the prefill keeps its own overlap
    assert serial["ttft_s"] == pytest.approx(overlapped["ttft_s"], rel=1e-12)


def test_a_separate_dequantisation_pass_streams_every_weight_per_gpu_batch():
    plan = dict(INFER, batch=8, offload_weights="cpu", weight_dtype="int4", micro_batch=4)
    one = perfsim.estimate(**plan, runtime=_flexgen(dequant_pass_bytes=13.0))
    two = perfsim.estimate(**plan, runtime=_flexgen(dequant_pass_bytes=26.0))
    params = one["parameters"]
    stream = 768e9 * 0.886  # rtx-a6000 GDDR6 at its streaming efficiency
    extra = two["breakdown"]["decode"]["elementwise_s"] - one["breakdown"]["decode"]["elementwise_s"]
    assert extra == pytest.approx(2 * params * 13.0 / stream, rel=1e-6)  # two GPU batches of 4
    # 16-bit weights have nothing to expand
    fp16 = {k: v for k, v in plan.items() if k != "weight_dtype"}
    a = perfsim.estimate(**fp16, runtime=_flexgen(dequant_pass_bytes=13.0))
    b = perfsim.estimate(**fp16, runtime=_flexgen(dequant_pass_bytes=26.0))
    assert a["tpot_s"] == pytest.approx(b["tpot_s"], rel=1e-12)


def _deepspeed(**keys):
    """DeepSpeed with a serial decode (its loads add to its compute), so the transfer time shows."""
    return {"base": "deepspeed", "decode_offload_prefetch": 0.0, **keys}


def test_driver_staged_pageable_copies_run_at_one_threads_copy_rate():
    plan = dict(INFER, batch=8, offload_weights="cpu")  # cache on the device: the weights stream
    pinned = perfsim.estimate(**plan, runtime=_deepspeed(host_memory_pinned=True))
    driver = perfsim.estimate(**plan, runtime=_deepspeed(host_memory_pinned=False))
    engine = perfsim.estimate(**plan, runtime=_deepspeed(host_memory_pinned=False, driver_staging=False))
    weights = pinned["offloaded_per_device_gib"]["cpu"]["weights"] * 2**30
    moved = {name: r["breakdown"]["decode"]["transfer_s"] for name, r in
             (("pinned", pinned), ("driver", driver), ("engine", engine))}
    # the driver copies each streamed byte into its staging buffer on one thread: rtx-a6000's 27.9 GB/s
    assert moved["driver"] - moved["pinned"] == pytest.approx(weights / 27.9e9, rel=1e-9)
    # an engine's own multi-threaded copy reads and writes each byte at the host's STREAM rate
    assert moved["engine"] - moved["pinned"] == pytest.approx(2 * weights / (204.8e9 * 0.81), rel=1e-9)
    assert pinned["tpot_s"] < engine["tpot_s"] < driver["tpot_s"]


def test_without_a_thread_copy_rate_driver_staging_runs_at_the_memory_bandwidth():
    from perfsim.analytical.offload import _streams

    c = dict(host_link_bw=32e9, host_link_eff=0.8, nvme_bw=5e9, nvme_write_bw=4e9, cpu_bw=200e9, cpu_mem_eff=0.8,
             devices_per_node=1.0, nvme_direct=0.0, host_pinned=0.0, kv_pinned=0.0, kv_store_bw=0.0,
             hidden_store_bw=0.0, driver_staging=1.0, thread_copy_bw=0.0, nvme_relay=0.0)
    t, _ = _streams(c, load_cpu=25.6e9)
    assert float(t) == pytest.approx(1.0 + 2 * 25.6e9 / 160e9, rel=1e-12)  # DMA at 25.6 GB/s, then the copy
    t, _ = _streams(dict(c, thread_copy_bw=12.8e9), load_cpu=25.6e9)
    assert float(t) == pytest.approx(1.0 + 2.0, rel=1e-12)


def test_a_relayed_nvme_read_adds_its_device_copy():
    from perfsim.analytical.offload import _streams

    c = dict(host_link_bw=32e9, host_link_eff=0.8, nvme_bw=5e9, nvme_write_bw=4e9, cpu_bw=200e9, cpu_mem_eff=0.8,
             devices_per_node=1.0, nvme_direct=0.0, host_pinned=1.0, kv_pinned=1.0, kv_store_bw=0.0,
             hidden_store_bw=0.0, driver_staging=0.0, thread_copy_bw=0.0, nvme_relay=0.0)
    piped, _ = _streams(c, load_nvme=25.6e9)
    assert float(piped) == pytest.approx(25.6e9 / 5e9, rel=1e-12)  # the drive bounds the pipelined streams
    relayed, _ = _streams(dict(c, nvme_relay=1.0), load_nvme=25.6e9)
    assert float(relayed) == pytest.approx(25.6e9 / 5e9 + 1.0, rel=1e-12)  # read, then 25.6 GB/s over the link
    # bytes from host memory alone are not relayed
    host, _ = _streams(dict(c, nvme_relay=1.0), load_cpu=25.6e9)
    assert float(host) == pytest.approx(1.0, rel=1e-12)


def test_flexgen_relays_disk_weights_through_its_copy_threads():
    plan = dict(INFER, batch=8, offload_weights="nvme")
    relayed = perfsim.estimate(**plan, runtime=_flexgen())
    piped = perfsim.estimate(**plan, runtime=_flexgen(nvme_relay=False))
    weights = relayed["offloaded_per_device_gib"]["nvme"]["weights"] * 2**30
    extra = relayed["breakdown"]["decode"]["transfer_s"] - piped["breakdown"]["decode"]["transfer_s"]
    assert extra == pytest.approx(weights / (32e9 * 0.821), rel=1e-6)  # rtx-a6000's PCIe Gen4 x16 at 82.1 %
    assert relayed["tpot_s"] > piped["tpot_s"]

