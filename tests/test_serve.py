"""Serving simulator: scheduler inequalities, agreement with the closed form, conservation, bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import perfsim
from perfsim.cli import cli
from perfsim.events.serving.metrics import weighted_stats
from perfsim.events.serving.requests import make_requests
from perfsim.validate import load_cases

SMALL = dict(model="llama2-7b", hardware="a100-80gb")


def _splitwise_cases():
    cases = [c for c in load_cases() if str(c["id"]).startswith("I-SPLIT-")]
    assert cases
    return [pytest.param(c, id=c["id"]) for c in cases]


@pytest.mark.parametrize("case", _splitwise_cases())
def test_one_offline_static_batch_reproduces_estimate(case):
    """num_requests = max_batch = batch, all at t=0, fixed lengths: serve's mean TTFT / TPOT are
    estimate's ttft_s / tpot_s (the same cost model, decode steps over the same mean context)."""
    args = {k: v for k, v in case["args"].items() if k not in ("mode", "batch", "prompt_len", "gen_len")}
    batch, prompt, gen = case["args"]["batch"], case["args"]["prompt_len"], case["args"]["gen_len"]
    est = perfsim.estimate(**case["args"])
    sim = perfsim.serve(**args, scheduler="static", num_requests=batch, max_batch=batch, prompt_len=prompt,
                        gen_len=gen)
    assert sim["feasible"] and sim["completed"] == batch
    metric = case["metric"]
    assert sim[metric]["mean"] == pytest.approx(est[metric], rel=0.01)
    # every request of the batch sees the same times
    assert sim[metric]["p99"] == pytest.approx(sim[metric]["p50"], rel=1e-9)
    assert sim["throughput_tokens_per_s"] == pytest.approx(est["throughput_tokens_per_s"], rel=0.01)
    assert sim["power_w_per_device"] == pytest.approx(est["power_w_per_device"], rel=0.01)


LOAD = dict(SMALL, num_requests=400, seed=1, arrival_rate=20.0, max_batch=32,
            prompt_len={"dist": "lognormal", "mean": 512, "sigma": 0.5, "max": 2048},
            gen_len={"dist": "lognormal", "mean": 128, "sigma": 0.8, "max": 1024},
            ttft_slo_s=5.0, tpot_slo_s=0.05)


def test_continuous_batching_beats_static_at_the_same_load():
    static = perfsim.serve(**LOAD, scheduler="static")
    continuous = perfsim.serve(**LOAD, scheduler="continuous")
    # measured: 453 vs 1257 tokens/s, goodput 0.31 vs 4.5 requests/s
    assert continuous["throughput_tokens_per_s"] > 2.0 * static["throughput_tokens_per_s"]
    assert continuous["goodput_requests_per_s"] > static["goodput_requests_per_s"]
    for result in (static, continuous):
        assert result["throughput_tokens_per_s"] <= result["optimal_throughput_tokens_per_s"]


MIXED = dict(SMALL, num_requests=300, seed=2, arrival_rate=2.5, gen_len=128,
             prompt_len={"dist": "lognormal", "mean": 2048, "sigma": 0.6, "max": 8192})


def test_chunked_prefill_bounds_the_stall_of_running_decodes():
    continuous = perfsim.serve(**MIXED, scheduler="continuous")
    chunked = perfsim.serve(**MIXED, scheduler="chunked-prefill", chunk_size=512)
    # measured: ITL p99 215 ms -> 51 ms, TPOT p99 38.5 ms -> 36.1 ms
    assert chunked["itl_s"]["p99"] < 0.5 * continuous["itl_s"]["p99"]
    assert chunked["tpot_s"]["p99"] < continuous["tpot_s"]["p99"]
    # the price: prompts take several iterations
    assert chunked["ttft_s"]["p50"] > continuous["ttft_s"]["p50"]


DISAGG = dict(SMALL, num_requests=300, seed=3, arrival_rate=4.0, gen_len=128,
              prompt_len={"dist": "lognormal", "mean": 1024, "sigma": 0.6, "max": 8192})


def test_disaggregation_removes_prefill_interference_and_pays_the_kv_transfer():
    colocated = perfsim.serve(**DISAGG, num_devices=2, dp=2)
    split = perfsim.serve(**DISAGG, disaggregate="1:1")
    slow_link = perfsim.serve(**{**DISAGG, "hardware": {"base": "a100-80gb", "scaleup_gb_s": 2}}, disaggregate="1:1")
    assert split["completed"] == colocated["completed"] == 300
    # measured: TPOT p99 13.4 ms colocated, 12.0 ms disaggregated
    assert split["tpot_s"]["p99"] < colocated["tpot_s"]["p99"]
    transfer = split["breakdown"]["kv_transfer"]
    slow = slow_link["breakdown"]["kv_transfer"]
    assert transfer["count"] == 300 and transfer["scale_up_fraction"] == 1.0
    # prefill instances do not wait for transfers: TTFT moves by exactly the transfer time
    assert slow_link["ttft_s"]["mean"] - split["ttft_s"]["mean"] == pytest.approx(slow["mean_s"] - transfer["mean_s"],
                                                                                  rel=1e-6)


def test_same_seed_same_result_and_the_seed_matters():
    a = perfsim.serve(**LOAD)
    b = perfsim.serve(**LOAD)
    c = perfsim.serve(**{**LOAD, "seed": 7})
    assert a == b
    assert a["ttft_s"] != c["ttft_s"]


def test_poisson_arrivals_follow_the_rate():
    requests = make_requests(num_requests=20000, prompt_len=("fixed", 10), gen_len=("fixed", 10), arrival_rate=50.0)
    gaps = np.diff(np.concatenate([[0.0], requests.arrival_s]))
    assert np.mean(gaps) == pytest.approx(1 / 50.0, rel=0.03)
    assert np.std(gaps) == pytest.approx(1 / 50.0, rel=0.05)  # exponential: std = mean
    light = perfsim.serve(**SMALL, num_requests=500, arrival_rate=3.0, prompt_len=256, gen_len=16)
    assert light["requests_per_s"] == pytest.approx(3.0, rel=0.1)


def test_lengths_keep_the_distribution_mean_and_clip():
    requests = make_requests(num_requests=50000,
                             prompt_len=("dist", {"dist": "lognormal", "mean": 1024.0, "sigma": 0.5}),
                             gen_len=("dist", {"dist": "lognormal", "mean": 256.0, "sigma": 1.0, "max": 512.0}))
    assert np.mean(requests.prompt_len) == pytest.approx(1024, rel=0.02)
    assert requests.gen_len.max() == 512 and requests.gen_len.min() >= 1
    assert np.all(requests.arrival_s == 0.0)


def test_energy_is_mean_power_times_time_and_tokens():
    r = perfsim.serve(**LOAD)
    b = r["breakdown"]
    devices = b["instances"] * b["devices_per_instance"]
    assert r["energy_j"] == pytest.approx(r["power_w_per_device"] * devices * b["makespan_s"], rel=1e-9)
    assert r["energy_j_per_token"] * b["generated_tokens"] == pytest.approx(r["energy_j"], rel=1e-9)
    parts = sum(v for k, v in b["energy"].items() if k in ("idle_j", "active_j", "matrix_j", "memory_j", "link_j"))
    assert parts == pytest.approx(r["energy_j"], rel=1e-9)
    idle = perfsim.serve(**SMALL, num_requests=20, arrival_rate=0.05, prompt_len=128, gen_len=8)
    assert idle["power_w_per_device"] < r["power_w_per_device"]  # mostly idle between requests


def test_every_token_gap_is_counted_once():
    """With fixed lengths, the mean gap between tokens equals the mean TPOT; and gaps are conserved
    through preemptions (the KV cache here holds a few requests only)."""
    tight = dict(SMALL, num_requests=300, arrival_rate=8.0, gen_len=200, gpu_memory_utilization=0.22,
                 prompt_len={"dist": "lognormal", "mean": 1024, "sigma": 0.5, "max": 4096})
    for scheduler in ("continuous", "chunked-prefill"):
        r = perfsim.serve(**tight, scheduler=scheduler)
        assert r["completed"] == 300
        assert r["breakdown"]["preemptions"] > 0
        assert r["itl_s"]["mean"] == pytest.approx(r["tpot_s"]["mean"], rel=1e-9)
        assert r["breakdown"]["kv_utilisation"] <= 1.0


def test_weighted_percentiles_match_numpy_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    values, weights = rng.random(50), rng.integers(0, 9, 50)
    expanded = np.repeat(values, weights)
    stats = weighted_stats(values, weights)
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert stats[key] == pytest.approx(np.percentile(expanded, q))
    assert stats["mean"] == pytest.approx(expanded.mean())


def test_replicas_share_the_load():
    one = perfsim.serve(**SMALL, num_requests=400, arrival_rate=4.0, prompt_len=512, gen_len=64)
    two = perfsim.serve(**SMALL, num_requests=800, arrival_rate=8.0, prompt_len=512, gen_len=64, dp=2)
    assert two["breakdown"]["instances"] == 2
    assert two["requests_per_s"] == pytest.approx(2 * one["requests_per_s"], rel=0.1)
    assert two["tpot_s"]["mean"] == pytest.approx(one["tpot_s"]["mean"], rel=0.1)


def test_plans_that_cannot_run_are_answers():
    r = perfsim.serve(model="llama2-70b", hardware="a100-80gb", num_requests=10)
    assert r["feasible"] is False and "does not fit" in r["reason"]
    assert r["completed"] == 0 and r["dropped"] == 10 and r["ttft_s"]["p50"] is None
    r = perfsim.serve(**SMALL, num_requests=10, gpu_memory_utilization=0.22, scheduler="chunked-prefill",
                      prompt_len={"dist": "uniform", "min": 100, "max": 30000}, gen_len=16)
    assert r["feasible"] is False and "cannot fit the KV cache" in r["reason"]
    assert r["dropped"] > 0 and r["completed"] + r["dropped"] == 10
    r = perfsim.serve(model="llama2-70b", hardware="h100-sxm", tp=8, scheduler="static", num_requests=300,
                      prompt_len=4096, max_batch=256)
    assert r["feasible"] is False and "lower max_batch" in r["reason"]
    r = perfsim.serve(**SMALL, tp=2, disaggregate="1:3")
    assert r["feasible"] is False and "whole instances" in r["reason"]


def test_trace_and_length_files(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_len,gen_len\n0.5,100,10\n0.0,200,20\n2.0,300,5\n")
    r = perfsim.serve(**SMALL, trace=str(trace))
    assert r["completed"] == 3 and r["breakdown"]["generated_tokens"] == 35
    assert r["e2e_latency_s"]["mean"] < 1.0
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("prompt_len\n100\n300\n")
    r = perfsim.serve(**SMALL, num_requests=50, prompt_len=str(lengths), gen_len=4)
    assert r["completed"] == 50


def test_chrome_trace_has_a_track_per_instance(tmp_path):
    out = tmp_path / "serve.json"
    r = perfsim.serve(**SMALL, num_requests=60, arrival_rate=10.0, prompt_len=256, gen_len=16,
                      disaggregate="1:1", trace_out=str(out))
    data = json.loads(out.read_text())
    events = data["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert {"prefill instance 0", "decode instance 0", "iterations", "counters"} <= names
    iterations = [e for e in events if e["ph"] == "X" and e.get("cat") == "iteration"]
    assert len(iterations) == r["breakdown"]["iterations"] == r["breakdown"]["trace"]["iterations_written"]
    assert {"batch", "prefill_tokens", "decode_tokens"} <= set(iterations[0]["args"])
    assert {e["name"] for e in events if e["ph"] == "C"} == {"running_requests", "kv_cache_used"}
    assert all(e["dur"] > 0 for e in iterations)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_cli_serve_json_and_table():
    base = ["serve", "--model", "llama2-7b", "--hardware", "a100-80gb", "--num-requests", "30",
            "--prompt-len", "lognormal:mean=256,sigma=0.5,max=1024", "--gen-len", '{"dist": "fixed", "value": 8}',
            "--arrival-rate", "5"]
    result = run(*base, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == perfsim.serve(**SMALL, num_requests=30, arrival_rate=5.0, gen_len={"dist": "fixed", "value": 8},
                                 prompt_len={"dist": "lognormal", "mean": 256, "sigma": 0.5, "max": 1024})
    result = run(*base)
    assert result.exit_code == 0, result.output
    assert "TTFT" in result.output and "optimal" in result.output


@pytest.mark.parametrize("extra, needle", [
    (["--arrival-rate", "-2"], "arrival_rate: expected a positive number"),
    (["--ttft-slo-s", "0"], "ttft_slo_s"),
    (["--scheduler", "continous"], "did you mean 'continuous'"),
    (["--disaggregate", "4-4"], "disaggregate: expected 'P:D'"),
    (["--prompt-len", "lognormal:mean=100,sigm=1"], "did you mean 'sigma'"),
    (["--prompt-len", "gamma:mean=100"], "unknown length distribution"),
    (["--max-batch", "0"], "max_batch"),
    (["--batch", "8"], "No such option"),
])
def test_cli_serve_bad_input_exits_2(extra, needle):
    result = run("serve", "--model", "llama2-7b", "--hardware", "a100-80gb", "--num-requests", "5", *extra)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content, needle", [
    ("", "no data rows"),
    ("arrival_s,prompt_len,gen_len\n", "no data rows"),
    ("arrival_s,prompt_len,gen_len\n0.0,100,10\n0.5,abc,10\n", ":3: prompt_len: expected a token count"),
    ("0.0,100\n", ":1: trace: expected 3 columns"),
    ("arrival,prompt_len,gen_len\n0,1,1\n", ":1: trace: the header has no 'arrival_s' column"),
    ("0.0,100,10\n-1,100,10\n", ":2: trace: arrival_s must be a finite time >= 0"),
])
def test_cli_serve_bad_trace_names_file_and_line(tmp_path, content, needle):
    path = tmp_path / "t.csv"
    path.write_text(content)
    result = run("serve", "--model", "llama2-7b", "--hardware", "a100-80gb", "--trace", str(path))
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and needle in result.output
    assert "Traceback" not in result.output


def test_api_rejects_nonsense_with_input_error(tmp_path):
    for bad in ({"batch": 4}, {"arrival_rate": 0}, {"tpot_slo_s": -1}, {"scheduler": "fifo"},
                {"disaggregate": "0:4"}, {"seed": -1}, {"num_requests": 2.5}, {"trace": str(tmp_path / "none.csv")},
                {"trace_out": str(tmp_path / "no" / "t.json")}, {"prompt_len": {"mean": 3}}, {"mode": "train"},
                {"arrival_rate": 1.0, "trace": "x.csv"}, {"tp": [1, 2]}):
        with pytest.raises(perfsim.InputError):
            perfsim.serve(**SMALL, **bad)


def test_slo_attainment_is_reported_only_against_an_slo():
    kw = dict(model="llama2-7b", hardware="a100-80gb", num_requests=50, prompt_len=256, gen_len=32, arrival_rate=5.0)
    assert perfsim.serve(**kw)["slo_attainment"] is None
    assert 0.0 <= perfsim.serve(**kw, ttft_slo_s=0.5)["slo_attainment"] <= 1.0


def test_serve_says_what_it_ran():
    r = perfsim.serve(model="llama2-7b", hardware="a100-80gb", num_devices=2, num_requests=20, arrival_rate=5.0)
    plan = r["plan"]
    assert plan["dp"] == 2 and plan["num_devices"] == 2 and plan["runtime"] == "trt-llm"
    assert plan["scheduler"] == "continuous" and plan["max_batch"] == 256 and plan["num_requests"] == 20
    assert plan["dtype"] == "bf16" and "seq_len" not in plan and "batch" not in plan


def test_a_static_batch_not_given_is_the_largest_that_fits():
    kw = dict(model="llama2-70b", hardware="h100-sxm", tp=8, scheduler="static", num_requests=300, arrival_rate=4.0)
    r = perfsim.serve(**kw)
    assert r["feasible"] and 1 <= r["plan"]["max_batch"] < 256
    assert not perfsim.serve(**kw, max_batch=r["plan"]["max_batch"] + 1)["feasible"]
    assert not perfsim.serve(**kw, max_batch=256)["feasible"]  # a batch given is taken as given


@pytest.mark.parametrize("model,hardware,tp", [("llama2-70b", "h100-sxm", 8), ("llama2-7b", "a100-80gb", 1)])
def test_loop_prices_match_the_tables_read_at_once(model, hardware, tp):
    """An iteration priced in the loop costs what the tables read for many iterations at once give
    (a mix, prefill pieces alone, decodes alone; under the board's power limit, where the 7B decode
    on one A100 needs the clock solve and the 70B one on eight H100s does not), and a chunked-prefill
    iteration of decodes alone, priced as a decode iteration, costs exactly what the mixed price gives."""
    from perfsim.events.serving.iteration_cost import IterationCost
    from perfsim.plan.columns import build
    from perfsim.plan.grid import expand

    c = build(expand({"model": model, "hardware": hardware, "tp": tp, "mode": "inference", "batch": 1,
                      "prompt_len": 1, "gen_len": 1}))
    cost = IterationCost(c, max_tokens=2048, max_seqs=64, max_context=4097)
    rng = np.random.default_rng(5)
    n_dec, n_pre = rng.integers(0, 60, 120), rng.integers(0, 5, 120)
    n_dec[0], n_pre[1:40] = 1, 0
    n_pre[n_dec == 0] = np.maximum(n_pre[n_dec == 0], 1)
    context = np.where(n_dec > 0, rng.uniform(1, 4096, 120), 0.0)
    prompt = np.where(n_pre > 0, rng.uniform(1, 400, 120), 0.0)
    tokens = np.minimum(n_dec + np.ceil(n_pre * prompt), 2048.0)
    logits = n_dec + n_pre
    loop = [cost.mixed_step_s(*args) for args in zip(tokens.tolist(), logits.tolist(), n_dec.tolist(),
                                                        context.tolist(), n_pre.tolist(), prompt.tolist(), strict=True)]
    assert loop == pytest.approx(cost.work(tokens, logits, n_dec, context, n_pre, prompt)["time_s"], rel=1e-12)
    alone = n_pre == 0
    assert alone.sum() >= 39
    assert [cost.decode_step_s(int(n), float(k)) for n, k in zip(n_dec[alone], context[alone], strict=True)] \
        == np.asarray(loop)[alone].tolist()
