"""Offloading plans: placement arguments, tiers, inference streaming, training offload, memcpy."""

import math

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import perfsim
from perfsim.cli import cli
from perfsim.plan.offload import canonical, fractions

GIB = 2.0**30
OFFLOAD_ARGS = ("offload_weights", "offload_optimizer", "offload_grads", "offload_activations", "offload_kv")
INFER = dict(model="opt-30b", hardware="rtx-a6000", dtype="fp16", batch=32, prompt_len=512, gen_len=32)


# --- placement arguments -------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("none", (1.0, 0.0, 0.0)), ("cpu", (0.0, 1.0, 0.0)), ("nvme", (0.0, 0.0, 1.0)), ("gpu", (1.0, 0.0, 0.0)),
    ("gpu=0.2,cpu=0.5,nvme=0.3", (0.2, 0.5, 0.3)), ("cpu=1", (0.0, 1.0, 0.0)),
    ({"gpu": 0.2, "cpu": 0.8}, (0.2, 0.8, 0.0)), ({"nvme": 1.0}, (0.0, 0.0, 1.0)),
])
def test_fractions_parse(value, expected):
    assert fractions(value) == pytest.approx(expected)


def test_equal_plans_share_one_spelling():
    assert canonical({"cpu": 1}) == canonical("cpu=1.0") == "cpu"
    assert canonical("gpu=1") == canonical("none") == "none"
    assert canonical("cpu=0.5, gpu=0.5") == "gpu=0.5,cpu=0.5"


@pytest.mark.parametrize("value, needle", [
    ("gpu=0.5,cpu=0.6", "sum to 1"),
    ({"gpu": 0.2, "cpu": 0.2}, "sum to 1"),
    ("gpu=-0.5,cpu=1.5", "[0, 1]"),
    ("cpu=0.5,cpu=0.5", "twice"),
    ("gpu=half,cpu=0.5", "number"),
    (3, "expected none"),
])
def test_bad_fractions_are_input_errors(value, needle):
    with pytest.raises(perfsim.InputError) as info:
        perfsim.estimate(**INFER, offload_weights=value)
    assert needle in str(info.value)
    assert info.value.field == "offload_weights"


def test_unknown_tier_suggests_close_matches():
    with pytest.raises(perfsim.InputError) as info:
        perfsim.estimate(**INFER, offload_kv="gpu=0.5,cpuu=0.5")
    assert info.value.field == "offload_kv"
    assert "cpu" in info.value.suggestions


def test_cli_bad_offload_exits_2():
    result = CliRunner().invoke(cli, ["estimate", "--model", "opt-30b", "--hardware", "t4",
                                      "--offload-weights", "gpu=0.3,nvm=0.7"])
    assert result.exit_code == 2
    assert "did you mean 'nvme'" in result.output and "Traceback" not in result.output


def test_cli_offload_runs_and_shows_tiers():
    result = CliRunner().invoke(cli, ["estimate", "--model", "opt-30b", "--hardware", "t4", "--dtype", "fp16",
                                      "--batch", "8", "--offload-weights", "cpu", "--offload-kv", "cpu"])
    assert result.exit_code == 0, result.output
    assert "memory per tier" in result.output and "offload" in result.output


# --- no offloading changes nothing -----------------------------------------------------------------

@pytest.mark.parametrize("plan", [
    INFER,
    dict(model="llama2-7b", hardware="a100-80gb", mode="train", zero=1, dp=8, num_devices=8, global_batch=64),
])
def test_offload_none_is_the_plain_plan(plan):
    plain = perfsim.estimate(**plan)
    none = perfsim.estimate(**plan, **{name: "none" for name in OFFLOAD_ARGS})
    assert none == plain


# --- inference -------------------------------------------------------------------------------------

def _infer(**kw):
    return perfsim.estimate(**{**INFER, **kw})


def test_offloaded_weights_stream_every_pass():
    r = _infer(offload_weights="cpu")
    assert r["feasible"]
    dec = r["breakdown"]["decode"]
    # the whole model crosses PCIe once per decode step: at least weights / link bandwidth
    weights = r["offloaded_per_device_gib"]["cpu"]["weights"] * GIB
    link = perfsim.memcpy("rtx-a6000", int(weights), "cpu", "hbm")
    assert dec["transfer_s"] == pytest.approx(link["time_s"], rel=0.01)
    assert r["tpot_s"] >= link["time_s"] * 0.99
    assert dec["offload_s"] > 0
    assert r["memory_per_device_gib"]["weights"] == 0.0


def test_breakdown_sums_to_the_phase_total():
    r = _infer(offload_weights="gpu=0.3,cpu=0.7", offload_kv="cpu")
    for phase in ("prefill", "decode"):
        b = r["breakdown"][phase]
        parts = sum(b[k] for k in ("gemm_s", "attention_s", "elementwise_s", "communication_s", "pipeline_s",
                                   "overhead_s", "host_attention_s", "offload_s"))
        assert parts == pytest.approx(b["total_s"], rel=1e-9)


def test_large_batch_amortises_the_weight_stream():
    small, large = _infer(offload_weights="cpu", batch=4), _infer(offload_weights="cpu", batch=64)
    assert large["throughput_tokens_per_s"] > 8 * small["throughput_tokens_per_s"]


def test_host_attention_is_chosen_when_faster_and_said_so():
    # FlexGen may attend on the CPU; loading a large cache over PCIe every step is slower
    r = _infer(offload_weights="cpu", offload_kv="cpu", batch=64, runtime="flexgen")
    assert r["breakdown"]["decode"]["cpu_attention"] == 1.0
    assert r["breakdown"]["decode"]["host_attention_s"] > 0
    # an engine without host attention loads the cache instead
    r = _infer(offload_weights="cpu", offload_kv="cpu", batch=64, runtime="hf-eager")
    assert r["breakdown"]["decode"]["cpu_attention"] == 0.0
    assert r["breakdown"]["decode"]["host_attention_s"] == 0.0


def test_attention_on_the_host_does_no_device_work():
    """The device's decode FLOPs and memory traffic (what its power is computed from) leave out
    the attention the host CPU runs: with the cache on the host and attention there, the device
    reads its weights only; with the same cache attended on the device, it also reads the cache."""
    plan = dict(INFER, offload_weights="cpu", offload_kv="cpu", batch=64, micro_batch=64)
    host = _infer(**plan, runtime="flexgen")
    device = _infer(**plan, runtime={"base": "flexgen", "offloaded_kv_attention": "device"})
    assert (host["breakdown"]["decode"]["cpu_attention"], device["breakdown"]["decode"]["cpu_attention"]) == (1, 0)
    cache = 64 * (512 + 32 / 2) * 48 * 2 * 7168 * 2  # mean context, 48 layers, K and V, fp16
    gap = device["breakdown"]["decode"]["hbm_bytes"] - host["breakdown"]["decode"]["hbm_bytes"]
    assert gap == pytest.approx(cache, rel=0.05)
    assert host["breakdown"]["decode"]["hbm_bytes"] == pytest.approx(2 * host["parameters"], rel=0.05)


def test_offloaded_inference_defaults_to_the_offloading_engine():
    assert _infer(offload_weights="cpu") == _infer(offload_weights="cpu", runtime="flexgen")
    assert _infer() != _infer(runtime="flexgen")  # without offloading the default engine stays


_SPLITS = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(lambda t: (t[0], t[1] * (1.0 - t[0])))


def _plan(gpu, cpu):
    nvme = max(1.0 - gpu - cpu, 0.0)
    return {"gpu": gpu, "cpu": cpu, "nvme": nvme} if gpu + cpu < 1.0 else {"gpu": gpu, "cpu": 1.0 - gpu}


@given(split=_SPLITS, step=st.floats(0.01, 0.5), kind=st.sampled_from(["offload_weights", "offload_kv",
                                                                        "offload_activations"]),
       runtime=st.sampled_from(["flexgen", "trt-llm"]), hardware=st.sampled_from(["rtx-a6000", "h100-sxm", "t4"]))
def test_moving_state_to_a_slower_tier_is_never_faster(split, step, kind, runtime, hardware):
    """Monotonic: shifting a share from the device to host memory, or from host memory to NVMe,
    never shortens the prefill or the decode step (pinned engines: DMA straight from host memory),
    at a fixed GPU batch (device memory freed by offloading may let a block-scheduled engine run
    fewer, larger GPU batches: that trade is the point of its policy search, see below)."""
    gpu, cpu = split
    base = dict(INFER, hardware=hardware, runtime=runtime, batch=16, micro_batch=16)
    moved_gpu = min(step, gpu)
    plans = [_plan(gpu, cpu), _plan(gpu - moved_gpu, cpu + moved_gpu)]
    moved_cpu = min(step, cpu)
    plans.append(_plan(gpu, cpu - moved_cpu))  # host memory -> NVMe
    rows = perfsim.sweep(**base, **{kind: [canonical(p) for p in plans]})
    for key in ("ttft_s", "tpot_s"):
        t = rows[key].to_numpy()
        assert t[1] >= t[0] * (1 - 1e-9)
        assert t[2] >= t[0] * (1 - 1e-9)


@given(split=_SPLITS, kind=st.sampled_from(["offload_weights", "offload_kv", "offload_activations"]))
def test_memory_per_tier_adds_up_to_the_plain_plan(split, kind):
    """Conservation: weights and KV cache over the three tiers equal the plain totals; of the
    activations, the working set stays on the device and the block's parked hidden states
    (batch x prompt x hidden, fp16) split as the plan says."""
    plain = _infer(runtime="flexgen")
    r = _infer(runtime="flexgen", **{kind: canonical(_plan(*split))})
    for key in ("weights", "kv_cache"):
        total = (r["memory_per_device_gib"][key] + r["offloaded_per_device_gib"]["cpu"][key]
                 + r["offloaded_per_device_gib"]["nvme"][key])
        assert total == pytest.approx(plain["memory_per_device_gib"][key], rel=1e-9, abs=1e-12)
    offloaded = canonical(_plan(*split)) != "none"  # an all-device plan parks no hidden states
    hidden = INFER["batch"] * INFER["prompt_len"] * 7168 * 2 / GIB * offloaded  # OPT-30B hidden size 7168
    shares = _plan(*split) if kind == "offload_activations" else {"gpu": 1.0}
    for tier in ("cpu", "nvme"):
        assert r["offloaded_per_device_gib"][tier]["activations"] == pytest.approx(hidden * shares.get(tier, 0.0))
    working = plain["memory_per_device_gib"]["activations"] / r["breakdown"]["gpu_batches"]
    assert r["memory_per_device_gib"]["activations"] == pytest.approx(working + hidden * shares.get("gpu", 0.0))
    tiers = r["memory_per_tier_gib"]
    assert tiers["gpu"] == pytest.approx(r["memory_per_device_gib"]["total"])
    assert tiers["cpu"] == pytest.approx(r["offloaded_per_device_gib"]["cpu"]["total"])  # one device per node used


def test_host_memory_overflow_is_infeasible_naming_the_tier():
    # OPT-175B in fp16 is 349 GB: more than the 252 GB of host memory of the rtx-a6000 workstation
    r = perfsim.estimate(model="opt-175b", hardware="rtx-a6000", dtype="fp16", offload_weights="cpu")
    assert not r["feasible"]
    assert "cpu tier" in r["reason"] and "host memory" in r["reason"]
    assert perfsim.estimate(model="opt-175b", hardware="rtx-a6000", dtype="fp16", offload_weights="nvme")["feasible"]


def test_nvme_overflow_and_missing_nvme_are_infeasible_naming_the_tier():
    # OPT-175B's cache for 256 sequences of 2,080 tokens is 2.5 TB: more than the 1.5 TB SSD of the T4 machine
    # (FlexGen's block schedule runs it in GPU batches small enough for the T4's 16 GB)
    r = perfsim.estimate(model="opt-175b", hardware="t4", dtype="fp16", offload_weights="nvme", offload_kv="nvme",
                         offload_activations="nvme", batch=256, prompt_len=2048, runtime="flexgen")
    assert not r["feasible"] and "nvme tier" in r["reason"]
    r = perfsim.estimate(model="opt-30b", hardware="mi210", dtype="fp16", offload_weights="nvme")
    assert not r["feasible"] and "nvme" in r["reason"]


def test_devices_of_a_node_share_its_host_memory():
    one = perfsim.estimate(model="llama2-70b", hardware="a100-80gb", dtype="bf16", offload_weights="cpu")
    eight = perfsim.estimate(model="llama2-70b", hardware="a100-80gb", dtype="bf16", offload_weights="cpu",
                             dp=8, batch=8)
    assert eight["memory_per_tier_gib"]["cpu"] == pytest.approx(8 * one["memory_per_tier_gib"]["cpu"])


def test_sweep_over_offload_plans():
    df = perfsim.sweep(**INFER, offload_weights=["none", "gpu=0.5,cpu=0.5", "cpu", {"nvme": 1.0}])
    assert list(df["offload_weights"].astype(str)) == ["none", "gpu=0.5,cpu=0.5", "cpu", "nvme"]
    assert df["tpot_s"].is_monotonic_increasing
    row = perfsim.estimate(**INFER, offload_weights="gpu=0.5,cpu=0.5")
    assert df.loc[1, "tpot_s"] == pytest.approx(row["tpot_s"], rel=1e-12)


# --- memcpy and the tier model --------------------------------------------------------------------

@pytest.mark.parametrize("src, dst", [("cpu", "hbm"), ("hbm", "cpu"), ("nvme", "hbm"), ("hbm", "nvme"),
                                      ("nvme", "cpu"), ("cpu", "nvme"), ("cpu", "cpu"), ("nvme", "nvme")])
def test_memcpy_paths(src, dst):
    r = perfsim.memcpy("h100-sxm", 1 << 30, src, dst)
    assert r["time_s"] > 0 and math.isfinite(r["bandwidth_gb_s"])


def test_memcpy_nvme_to_device_is_bounded_by_link_and_drive():
    hw = {"base": "rtx-a6000", "nvme_bandwidth_gb_s": 100.0}
    fast_drive = perfsim.memcpy(hw, 1 << 34, "nvme", "hbm")["bandwidth_gb_s"]
    link = perfsim.memcpy("rtx-a6000", 1 << 34, "cpu", "hbm")["bandwidth_gb_s"]
    assert fast_drive == pytest.approx(link, rel=1e-3)  # the host link binds
    slow_drive = perfsim.memcpy("rtx-a6000", 1 << 34, "nvme", "hbm")["bandwidth_gb_s"]
    assert slow_drive == pytest.approx(4.67, rel=1e-3)  # the drive binds (its measured read)


def test_memcpy_without_a_tier_is_an_input_error():
    with pytest.raises(perfsim.InputError, match="no bandwidth"):
        perfsim.memcpy("mi210", 1 << 20, "nvme", "hbm")


# --- training ----------------------------------------------------------------------------------------

TRAIN = dict(model="llama2-7b", hardware="v100-32gb", mode="train", dtype="fp16", num_devices=1, seq_len=1024,
             micro_batch=4, global_batch=16, recompute="full", runtime="deepspeed", zero=2)


def test_zero_offload_moves_adam_to_the_host_cpu():
    plain = perfsim.estimate(**TRAIN)
    r = perfsim.estimate(**TRAIN, offload_optimizer="cpu")
    assert r["feasible"] and not plain["feasible"]  # 7B with Adam states does not fit a 32 GB V100
    assert r["memory_per_device_gib"]["optimizer"] == 0.0
    assert r["offloaded_per_device_gib"]["cpu"]["optimizer"] == pytest.approx(
        plain["memory_per_device_gib"]["optimizer"])
    train = r["breakdown"]["train"]
    assert train["optimizer_s"] == 0.0
    # the host step streams ~36 bytes per parameter through the DGX-1's host memory
    host_bw = 136.5e9 * 0.83
    assert train["host_optimizer_s"] >= r["parameters"] * 36.0 / host_bw * 0.999
    assert train["offload_s"] >= train["host_optimizer_s"]
    assert r["step_time_s"] == pytest.approx(plain["step_time_s"] - plain["breakdown"]["train"]["optimizer_s"]
                                             + train["offload_s"], rel=1e-9)


def test_zero_infinity_nvme_shares_the_drive_of_a_node():
    one = perfsim.estimate(**{**TRAIN, "model": "llama2-70b", "zero": 3, "offload_optimizer": "nvme",
                              "offload_weights": "cpu"})
    assert one["memory_per_tier_gib"]["nvme"] > 0
    # states are read and written once per step over the node's SSDs (2.2 GB/s on the DGX-1)
    states = one["offloaded_per_device_gib"]["nvme"]["optimizer"] * GIB
    assert one["breakdown"]["train"]["host_optimizer_s"] >= 2.0 * states / 2.2e9 * 0.999
    eight = perfsim.estimate(**{**TRAIN, "model": "llama2-70b", "zero": 3, "offload_optimizer": "nvme",
                                "offload_weights": "cpu", "num_devices": 8, "global_batch": 32})
    # eight ranks each own an eighth of the states but share the drive: the step takes as long
    assert eight["breakdown"]["train"]["host_optimizer_s"] == pytest.approx(
        one["breakdown"]["train"]["host_optimizer_s"], rel=0.05)


def test_offloaded_activations_and_weights_stream_per_micro_batch():
    base = dict(TRAIN, recompute="none", offload_optimizer="cpu", zero=3)
    r = perfsim.estimate(**base, offload_activations="cpu", offload_weights="cpu")
    plain = perfsim.estimate(**base)
    assert r["memory_per_device_gib"]["activations"] == 0.0
    assert r["memory_per_device_gib"]["weights"] == 0.0
    assert r["breakdown"]["train"]["transfer_s"] > plain["breakdown"]["train"]["transfer_s"]
    assert r["step_time_s"] >= plain["step_time_s"]


@given(split=_SPLITS, step=st.floats(0.01, 0.5),
       kind=st.sampled_from(["offload_grads", "offload_activations", "offload_weights"]),
       hardware=st.sampled_from(["v100-32gb", "h100-sxm", "a100-80gb"]))
def test_training_never_speeds_up_when_state_moves_to_a_slower_tier(split, step, kind, hardware):
    """Monotonic, one kind of state at a time (pinned engine; the others stay on the device)."""
    gpu, cpu = split
    moved_gpu, moved_cpu = min(step, gpu), min(step, cpu)
    plans = [_plan(gpu, cpu), _plan(gpu - moved_gpu, cpu + moved_gpu), _plan(gpu, cpu - moved_cpu)]
    rows = perfsim.sweep(**{**TRAIN, "hardware": hardware, "runtime": "torchtitan", "zero": 3},
                         **{kind: [canonical(p) for p in plans]})
    t = rows["step_time_s"].to_numpy()
    assert t[1] >= t[0] * (1 - 1e-9)
    assert t[2] >= t[0] * (1 - 1e-9)


@given(cpu=st.floats(0.0, 1.0), step=st.floats(0.01, 1.0), hardware=st.sampled_from(["v100-32gb", "h100-sxm"]))
def test_optimizer_on_slower_tiers_is_never_faster(cpu, step, hardware):
    """The optimizer: the whole step from HBM to host to NVMe, and any share from host to NVMe.
    (A small share moved from HBM to the host can shorten the step, as its host part runs while
    the device steps the rest: a real effect of partial offload, so not asserted.)"""
    base = {**TRAIN, "hardware": hardware, "runtime": "torchtitan", "zero": 3}
    whole = perfsim.sweep(**base, offload_optimizer=["none", "cpu", "nvme"])["step_time_s"].to_numpy()
    assert whole[0] <= whole[1] <= whole[2]
    moved = min(step, cpu)
    plans = [_plan(0.0, cpu), _plan(0.0, cpu - moved)]
    t = perfsim.sweep(**base, offload_optimizer=[canonical(p) for p in plans])["step_time_s"].to_numpy()
    assert t[1] >= t[0] * (1 - 1e-9)


@given(split=_SPLITS, kind=st.sampled_from(["offload_optimizer", "offload_grads", "offload_activations",
                                            "offload_weights"]))
def test_training_state_over_tiers_adds_up(split, kind):
    plain = perfsim.estimate(**TRAIN)
    r = perfsim.estimate(**TRAIN, **{kind: canonical(_plan(*split))})
    for key in ("weights", "gradients", "optimizer", "activations"):
        total = (r["memory_per_device_gib"][key] + r["offloaded_per_device_gib"]["cpu"][key]
                 + r["offloaded_per_device_gib"]["nvme"][key])
        assert total == pytest.approx(plain["memory_per_device_gib"][key], rel=1e-9, abs=1e-12)


def test_host_optimizer_needs_a_described_host_cpu():
    r = perfsim.estimate(model="llama2-7b", hardware="mi210", mode="train", offload_optimizer="cpu",
                         recompute="full")
    assert not r["feasible"] and "cpu tier" in r["reason"] and "node.cpu" in r["reason"]


def test_sweep_of_training_offload_plans_matches_single_estimates():
    plans = ["none", "cpu", "gpu=0.5,cpu=0.5", "nvme"]
    df = perfsim.sweep(**TRAIN, offload_optimizer=plans)
    for i, plan in enumerate(plans):
        one = perfsim.estimate(**TRAIN, offload_optimizer=plan)
        assert df.loc[i, "step_time_s"] == pytest.approx(one["step_time_s"], rel=1e-12)
        assert bool(df.loc[i, "feasible"]) == one["feasible"]


def test_gpu_batches_of_a_block_overlap_the_weight_load_with_the_first_only():
    """FlexGen's block of ``batch`` sequences in GPU batches of ``micro_batch``: the next layer's
    weights load while only the first GPU batch computes, each GPU batch reads the layer's
    weights from device memory again, and the device holds one GPU batch's working set (plus the
    block's parked hidden states, here left on the device)."""
    plan = dict(INFER, offload_weights="cpu", offload_kv="cpu", batch=64, runtime="flexgen")
    whole, split = perfsim.estimate(**plan, micro_batch=64), perfsim.estimate(**plan, micro_batch=16)
    assert (whole["breakdown"]["gpu_batches"], split["breakdown"]["gpu_batches"]) == (1, 4)
    assert split["tpot_s"] >= whole["tpot_s"]
    parked = 64 * 512 * 7168 * 2 / GIB
    assert split["memory_per_device_gib"]["activations"] - parked == pytest.approx(
        (whole["memory_per_device_gib"]["activations"] - parked) / 4)
    # three more reads of the 60 GB of fp16 weights per decode step
    extra = split["breakdown"]["decode"]["hbm_bytes"] - whole["breakdown"]["decode"]["hbm_bytes"]
    assert extra == pytest.approx(3 * 2 * whole["parameters"], rel=0.02)


def test_block_schedule_takes_the_fewest_gpu_batches_that_fit():
    """Without ``micro_batch`` a block-scheduled engine (FlexGen) splits a batch whose working set
    does not fit the device into the fewest GPU batches that do; an engine without a block
    schedule runs the whole batch and does not fit. FlexGen's published policy for this plan
    (OPT-30B on a 16 GB T4, block 80, prompt 1024) is 4 GPU batches of 20."""
    plan = dict(model="opt-30b", hardware="t4", dtype="fp16", batch=80, prompt_len=1024, gen_len=32,
                offload_weights="gpu=0.04,cpu=0.96", offload_kv="cpu", offload_activations="cpu")
    auto = perfsim.estimate(**plan, runtime="flexgen")
    n = auto["breakdown"]["gpu_batches"]
    assert 2 <= n <= 8 and auto["feasible"]
    assert not perfsim.estimate(**plan, runtime="flexgen", micro_batch=80)["feasible"]
    assert perfsim.estimate(**plan, runtime="flexgen", micro_batch=math.ceil(80 / (n - 1)))["memory_per_device_gib"][
        "total"] > auto["memory_per_device_gib"]["total"]
    bigger = perfsim.estimate(**{**plan, "hardware": {"base": "t4", "hbm_capacity_gib": 48}}, runtime="flexgen")
    assert bigger["breakdown"]["gpu_batches"] < n
    assert not perfsim.estimate(**plan, runtime="deepspeed")["feasible"]


# --- MoE expert offload: an expert cache on the device, misses fetched on demand ----------------

MOE = dict(model="mixtral-8x7b", hardware="h100-pcie", batch=1, prompt_len=512, gen_len=64)


def test_expert_cache_holds_its_share_and_fetches_the_misses():
    """Experts 25 % on the device, 75 % in host memory: the device keeps the dense weights and a
    quarter of the experts; a decode step fetches the routed experts it misses, on demand."""
    plain = perfsim.estimate(**MOE, micro_batch=1)
    r = perfsim.estimate(**MOE, offload_experts="gpu=0.25,cpu=0.75")
    experts = 32 * 8 * 3 * 4096 * 14336 * 2 / GIB  # 32 layers x 8 experts x 3 matrices, bf16
    assert r["offloaded_per_device_gib"]["cpu"]["weights"] == pytest.approx(0.75 * experts, rel=1e-6)
    assert r["memory_per_device_gib"]["weights"] == pytest.approx(
        plain["memory_per_device_gib"]["weights"] - 0.75 * experts, rel=1e-6)
    assert r["feasible"] and not plain["feasible"]  # 87 GiB of bf16 weights do not fit 80 GB
    # batch 1 routes 2 of 8 experts per layer; three quarters of those miss the cache
    fetch = [perfsim.estimate(**MOE, offload_experts="gpu=0.25,cpu=0.75", expert_hit_rate=h)["breakdown"]["decode"]
             ["offload_s"] for h in (0.0, 0.5, 1.0)]
    assert fetch[2] == pytest.approx(0.0, abs=1e-12)
    assert fetch[1] == pytest.approx(fetch[0] / 2, rel=0.01)
    missed = 0.75 * 2 / 8 * experts * GIB  # bytes per decode step at the default hit rate (0.25)
    link = perfsim.memcpy("h100-pcie", int(missed), "cpu", "hbm")
    assert r["breakdown"]["decode"]["offload_s"] == pytest.approx(link["time_s"], rel=0.01)


@given(hits=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2), gpu=st.floats(0.0, 1.0))
def test_a_better_expert_cache_is_never_slower(hits, gpu):
    """Monotonic: a higher hit rate never lengthens a step; neither does a larger cache."""
    lo, hi = sorted(hits)
    plan = dict(MOE, offload_experts=canonical({"gpu": gpu, "cpu": 1.0 - gpu}))
    rows = perfsim.sweep(**plan, expert_hit_rate=[lo, hi])
    for key in ("ttft_s", "tpot_s"):
        t = rows[key].to_numpy()
        assert t[1] <= t[0] * (1 + 1e-9)
    bigger = canonical({"gpu": min(gpu + 0.25, 1.0), "cpu": 1.0 - min(gpu + 0.25, 1.0)})
    rows = perfsim.sweep(**MOE, offload_experts=[plan["offload_experts"], bigger])
    assert rows["tpot_s"].to_numpy()[1] <= rows["tpot_s"].to_numpy()[0] * (1 + 1e-9)


def test_offload_experts_means_nothing_for_a_dense_model():
    placed, plain = perfsim.estimate(**INFER, offload_experts="cpu"), perfsim.estimate(**INFER)
    assert placed.pop("plan")["offload_experts"] == "cpu"  # the plan says what was asked
    plain.pop("plan")
    assert placed == plain


def test_bad_expert_hit_rate_is_an_input_error():
    with pytest.raises(perfsim.InputError, match="expert_hit_rate"):
        perfsim.estimate(**MOE, offload_experts="cpu", expert_hit_rate=1.5)
