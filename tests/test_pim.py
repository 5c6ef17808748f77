"""PIM device model, placement on NPU/GPU + PIM systems, heterogeneous results."""

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import perfsim
from perfsim.cli import cli
from perfsim.graph.transformer import kv_bytes_per_token

PIM = {"decode_attention": "pim"}
# NeuPIMs' evaluation (Heo et al., ASPLOS'24): GPT-3 13B-class models served in batches of
# hundreds of requests with ShareGPT/Alpaca-length conversations. llama2-13b has GPT-3 13B's
# shape (5,120 hidden, 40 layers, 40 heads of 128); tp 8 puts its weights and the KV cache of 256
# such requests in the 32 GB of each NeuPIMs device.
NEUPIMS = dict(model="llama2-13b", hardware="npu-pim", dtype="fp16", tp=8, batch=256, prompt_len=512, gen_len=256)
# a batch large enough that each half still keeps the arrays busy (~260 tokens make a GEMM
# compute-bound on this NPU), a GQA model so that 512 sequences per replica fit
INTERLEAVE = dict(model="mistral-7b", hardware="npu-pim", dtype="fp16", tp=4, num_devices=8, batch=1024,
                  prompt_len=512, gen_len=128)


def _est(**kw):
    r = perfsim.estimate(**kw)
    assert r["feasible"], r["reason"]
    return r


def test_npu_pim_decode_speedup_in_the_range_neupims_reports():
    """Baseline: the same NPU with everything on it (``place {}``), the PIM memory read as plain
    HBM, which is NeuPIMs' "NPU-only" system (the npu spec gives the same numbers). NeuPIMs
    reports 2.4x over NPU-only (and 1.6x over a naive blocked NPU+PIM); its speed-ups span
    about 1.6-3x over models and datasets."""
    npu_only = _est(**NEUPIMS, place={})
    assert _est(**dict(NEUPIMS, hardware="npu"))["tpot_s"] == pytest.approx(npu_only["tpot_s"])
    with_pim = _est(**NEUPIMS, place=PIM)
    speedup = npu_only["tpot_s"] / with_pim["tpot_s"]
    assert 1.6 <= speedup <= 3.0
    # prefill is compute-bound: PIM does not speed it up
    assert with_pim["ttft_s"] == pytest.approx(npu_only["ttft_s"])
    assert with_pim["breakdown"]["decode"]["pim_s"] > 0
    assert with_pim["breakdown"]["busy_s"]["pim"] > 0


def test_prefill_is_not_sped_up_by_pim():
    for hw, kw in (("npu-pim", dict(dtype="fp16")), ("a100a-attacc", dict(dtype="fp16"))):
        plan = dict(model="llama2-7b", hardware=hw, batch=8, prompt_len=1024, gen_len=64, **kw)
        base, pim = _est(**plan, place={}), _est(**plan, place=PIM)
        assert pim["ttft_s"] >= base["ttft_s"] * (1 - 1e-12)
        # prefill attention on PIM is a what-if the model answers: slower (PIM's FLOP rate is low)
        slow = _est(**plan, place={**PIM, "prefill_attention": "pim"})
        assert slow["ttft_s"] > base["ttft_s"]


def test_small_batch_decode_gains_little():
    for batch in (1, 4):
        plan = dict(NEUPIMS, batch=batch)
        gain = _est(**plan, place={})["tpot_s"] / _est(**plan, place=PIM)["tpot_s"]
        assert 1.0 <= gain < 1.1
    # the gain grows with the batch, as attention's share of the step does
    gains = [_est(**dict(NEUPIMS, batch=b), place={})["tpot_s"] / _est(**dict(NEUPIMS, batch=b), place=PIM)["tpot_s"]
             for b in (1, 16, 64, 256)]
    assert np.all(np.diff(gains) > 0)


def test_blocked_pim_is_slower_than_concurrent():
    """A plain PIM (one row buffer: host traffic and PIM commands take turns) against NeuPIMs'
    dual row buffers, each with its default sub-batching."""
    blocked = _est(**INTERLEAVE, place=PIM, pim_mode="blocked")
    concurrent = _est(**INTERLEAVE, place=PIM, pim_mode="concurrent")
    assert blocked["tpot_s"] > concurrent["tpot_s"]
    assert blocked["breakdown"]["decode"]["sub_batches"] == 1
    assert concurrent["breakdown"]["decode"]["sub_batches"] == 2
    # at equal sub-batching, blocked mode can only add the turns of the shared banks
    for plan in (INTERLEAVE, NEUPIMS):
        b2 = _est(**plan, place=PIM, pim_mode="blocked", sub_batches=2)["tpot_s"]
        c2 = _est(**plan, place=PIM, pim_mode="concurrent", sub_batches=2)["tpot_s"]
        assert b2 >= c2
    # where the NPU's own memory traffic fills its time (one device, long contexts), PIM waits for
    # its turns on the banks
    busy = dict(model="mistral-7b", hardware="npu-pim", dtype="fp16", tp=2, batch=64, prompt_len=2048, gen_len=128,
                place=PIM, sub_batches=2)
    assert _est(**busy, pim_mode="blocked")["tpot_s"] > 1.05 * _est(**busy, pim_mode="concurrent")["tpot_s"]


def test_two_sub_batches_beat_one_in_concurrent_mode():
    one = _est(**INTERLEAVE, place=PIM, sub_batches=1)
    two = _est(**INTERLEAVE, place=PIM, sub_batches=2)
    assert two["tpot_s"] < one["tpot_s"]
    d = two["breakdown"]["decode"]
    assert d["overlap_s"] < 0  # NPU and PIM time overlap
    # closed form: max(NPU, PIM) + one exposed stage, below the sum and above the busier side
    npu_side = d["gemm_s"] + d["attention_s"] + d["elementwise_s"] + d["communication_s"]
    assert max(npu_side, d["pim_s"]) < d["total_s"] - d["overhead_s"] - d["pipeline_s"] < npu_side + d["pim_s"]


def test_breakdown_sums_to_the_total_with_pim():
    for plan in (dict(INTERLEAVE, place=PIM), dict(NEUPIMS, place=PIM, sub_batches=1),
                 dict(model="llama2-7b", hardware="a100a-attacc", tp=2, batch=32, prompt_len=1024, place=PIM)):
        r = _est(**plan)
        for phase in ("prefill", "decode"):
            b = r["breakdown"][phase]
            parts = sum(b[k] for k in ("gemm_s", "attention_s", "elementwise_s", "communication_s", "pipeline_s",
                                       "overhead_s", "pim_s", "pim_link_s", "overlap_s"))
            parts += b.get("throttle_s", 0.0)  # the time a clock lowered to the power limit adds
            assert parts == pytest.approx(b["total_s"], rel=1e-9)
        e = r["breakdown"]["energy"]
        devices = sum(e[k] for k in ("idle_j", "active_j", "matrix_j", "memory_j", "link_j", "vector_j", "pim_j"))
        assert devices == pytest.approx(r["energy_j"])
        assert e["pim_j"] > 0


def test_unknown_place_keys_and_devices_are_input_errors():
    with pytest.raises(perfsim.InputError, match=r"place: unknown place key 'decode_atention' \(did you mean "
                                                 r"'decode_attention'"):
        perfsim.estimate(model="llama2-7b", hardware="npu-pim", place={"decode_atention": "pim"})
    with pytest.raises(perfsim.InputError, match=r"place.decode_attention: unknown device 'pimm' \(did you mean 'pim'"):
        perfsim.estimate(model="llama2-7b", hardware="npu-pim", place={"decode_attention": "pimm"})
    with pytest.raises(perfsim.InputError, match="expected a mapping"):
        perfsim.estimate(model="llama2-7b", hardware="npu-pim", place="decode_attention")
    runner = CliRunner()
    result = runner.invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "npu-pim",
                                 "--place", "mlpp=pim"])
    assert result.exit_code == 2
    assert "did you mean 'mlp'" in result.output and "Traceback" not in result.output


def test_cli_place_option_is_repeatable():
    runner = CliRunner()
    result = runner.invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "npu-pim", "--dtype", "fp16",
                                 "--batch", "8", "--place", "decode_attention=pim", "--place", "mlp=npu",
                                 "--pim-mode", "blocked", "--sub-batches", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"pim_s"' in result.output
    table = runner.invoke(cli, ["estimate", "--model", "llama2-7b", "--hardware", "npu-pim", "--dtype", "fp16",
                                "--batch", "8", "--place", "decode_attention=pim"])
    assert table.exit_code == 0 and "on PIM" in table.output and "bottleneck device" in table.output


def test_place_without_pim_is_infeasible_with_a_reason():
    r = perfsim.estimate(model="llama2-7b", hardware="h100-sxm", place=PIM)
    assert r["feasible"] is False and "no PIM" in r["reason"]
    # naming the main device by another kind
    r = perfsim.estimate(model="llama2-7b", hardware="npu-pim", dtype="fp16", place={"decode_attention": "gpu"})
    assert r["feasible"] is False and "kind" in r["reason"]
    # the main device by its own name is the default placement
    same = perfsim.estimate(model="llama2-7b", hardware="npu-pim", dtype="fp16", place={"decode_attention": "npu"})
    assert same["feasible"] and same["tpot_s"] == perfsim.estimate(model="llama2-7b", hardware="npu-pim",
                                                                   dtype="fp16")["tpot_s"]
    # MLP weights cannot move to PIM stacks that hold the KV cache only
    r = perfsim.estimate(model="llama2-7b", hardware="h100-pim", place={"mlp": "pim"})
    assert r["feasible"] is False and "mlp" in r["reason"]
    # training is not placed
    r = perfsim.estimate(model="llama2-7b", hardware="npu-pim", dtype="fp16", mode="train", place=PIM)
    assert r["feasible"] is False and "inference" in r["reason"]
    # serve does not take placements yet
    with pytest.raises(perfsim.InputError, match="place"):
        perfsim.serve(model="llama2-7b", hardware="npu-pim", dtype="fp16", num_requests=4, place=PIM)


def test_sweep_over_placements_matches_estimates():
    df = perfsim.sweep(model="llama2-7b", hardware=["npu-pim", "a100a-attacc"], dtype="fp16", batch=[1, 64],
                       place=[{}, PIM], pim_mode=["concurrent", "blocked"])
    assert len(df) == 16
    for _, row in df.iterrows():
        place = PIM if "pim" in row["place"] else {}
        r = perfsim.estimate(model="llama2-7b", hardware=row["hardware"], dtype="fp16", batch=int(row["batch"]),
                             place=place, pim_mode=row["pim_mode"])
        assert r["tpot_s"] == pytest.approx(row["tpot_s"], rel=1e-12)
        assert r["bottleneck_device"] == row["bottleneck_device"]


def test_gpu_with_pim_stacks_holds_the_kv_cache_there_and_pays_the_link():
    plan = dict(model="gpt3-175b", hardware="a100a-attacc", tp=8, dtype="fp16", batch=32, prompt_len=2048,
                gen_len=128)
    gpu, pim = perfsim.estimate(**plan, place={}), _est(**plan, place=PIM)
    assert not gpu["feasible"]  # AttAcc's point: the KV cache of this batch does not fit beside the weights
    assert pim["memory_per_device_gib"]["kv_cache"] == 0 < gpu["memory_per_device_gib"]["kv_cache"]
    assert pim["breakdown"]["pim"]["kv_cache_gib"] == pytest.approx(gpu["memory_per_device_gib"]["kv_cache"])
    assert pim["kv_cache_capacity_tokens"] > gpu["kv_cache_capacity_tokens"]
    assert pim["tpot_s"] < gpu["tpot_s"]
    # per layer and step the link carries the query and the new K, V in and the attention output back
    c = _columns(plan)
    heads = 96 / 8
    per_layer = 32 * (2 * heads * 128 * 2 + float(kv_bytes_per_token(c)))
    link = per_layer * 96 / 300e9
    assert pim["breakdown"]["decode"]["pim_link_s"] == pytest.approx(link, rel=1e-9)
    # prefill ships each layer's K and V to the stacks
    assert pim["breakdown"]["prefill"]["pim_link_s"] > 0
    # KV cache larger than the stacks: infeasible, with the sizes
    big = perfsim.estimate(**dict(plan, batch=96), place=PIM)
    assert big["feasible"] is False and "PIM stacks" in big["reason"] and "GiB" in big["reason"]


def _columns(plan):
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    return build(expand(plan))


def test_pim_only_device_runs_every_matmul_from_its_banks():
    """A PIM-GPT-like device (the ``pim`` spec) running a small GPT (GPT-2 XL shape)."""
    gpt2_xl = {"hidden_size": 1600, "num_hidden_layers": 48, "num_attention_heads": 25, "intermediate_size": 6400,
               "vocab_size": 50257, "hidden_act": "gelu_new", "max_position_embeddings": 1024,
               "tie_word_embeddings": True}
    plan = dict(model=gpt2_xl, dtype="fp16", batch=1, prompt_len=128, gen_len=128)
    pim = _est(**plan, hardware="pim")
    npu = _est(**plan, hardware="npu")
    d = pim["breakdown"]["decode"]
    assert d["pim_s"] > max(d["gemm_s"], d["attention_s"], d["elementwise_s"])
    assert pim["bottleneck_device"] == "pim"
    # GEMV from the banks beats streaming the weights over the memory interface ...
    assert pim["tpot_s"] < 0.5 * npu["tpot_s"]
    # ... and the decode step stays above reading the weights and KV cache once in the banks
    assert pim["tpot_s"] >= d["hbm_bound_s"]
    # while prefill, compute-bound, is slower on the PIM's modest MAC rate
    assert pim["ttft_s"] > npu["ttft_s"]
    gemv = perfsim.gemm("pim", 1, 4096, 4096, dtype="fp16")["time_s"]
    assert perfsim.gemm("pim", 64, 4096, 4096, dtype="fp16")["time_s"] > 10 * gemv  # one GEMV per row


def test_mlp_on_pim_pays_at_small_batch_only():
    small = dict(model="llama2-7b", hardware="npu-pim", dtype="fp16", batch=1, prompt_len=256, gen_len=64)
    assert _est(**small, place={"mlp": "pim"})["tpot_s"] < _est(**small, place={})["tpot_s"]
    big = dict(small, batch=64)
    assert _est(**big, place={"mlp": "pim"})["tpot_s"] > _est(**big, place={})["tpot_s"]
    assert _est(**small, place={"mlp": "pim"})["ttft_s"] == pytest.approx(_est(**small, place={})["ttft_s"])


def test_pim_settings_need_pim():
    r = perfsim.estimate(model="llama2-7b", hardware="h100-sxm", pim_mode="blocked")
    assert r["feasible"] is False
    with pytest.raises(perfsim.InputError):
        perfsim.estimate(model="llama2-7b", hardware="npu-pim", sub_batches=3)


@given(batch=st.integers(1, 256), prompt=st.sampled_from([128, 512, 1024]),
       mode=st.sampled_from(["concurrent", "blocked"]), sub=st.sampled_from([None, 1, 2]))
@settings(deadline=None)
def test_more_bandwidth_is_never_slower_and_more_work_never_faster(batch, prompt, mode, sub):
    extra = {} if sub is None else {"sub_batches": sub}
    df = perfsim.sweep(model="llama2-7b", hardware={"base": "npu-pim", "hbm_bandwidth_gb_s": [512, 1024, 2048]},
                       dtype="fp16", tp=2, batch=[batch, batch + 1], prompt_len=prompt, gen_len=64, place=[PIM],
                       pim_mode=mode, **extra)
    tpot = df["tpot_s"].to_numpy().reshape(3, 2)
    assert np.all(np.diff(tpot, axis=0) <= 1e-12)  # bandwidth up: never slower
    assert np.all(tpot[:, 1] >= tpot[:, 0] - 1e-12)  # one more sequence: never faster
