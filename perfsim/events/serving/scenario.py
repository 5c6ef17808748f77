"""A serving scenario: arguments → request set → simulation → the result (docs/reference.md).

The deployment (model, hardware, parallelism, dtypes, runtime) is an ``estimate`` plan of one
row: its columns drive the cost tables, its memory model gives the KV-cache capacity of an
instance under ``gpu_memory_utilization``, and its checks decide whether the plan can run at
all. The arguments are checked in :mod:`~perfsim.events.serving.checks`; what the run measured
(latency, throughput, power and energy) is summarised in :mod:`~perfsim.events.serving.metrics`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from perfsim.analytical.evaluate import evaluate_grid
from perfsim.analytical.inference import forward_time
from perfsim.errors import InputError
from perfsim.events.serving.checks import DEFAULT_REQUESTS, check_scenario, serving_limits
from perfsim.events.serving.iteration_cost import IterationCost, kv_transfer_s
from perfsim.events.serving.metrics import empty_result, summarise
from perfsim.events.serving.requests import Requests, make_requests
from perfsim.events.serving.simulator import ServeConfig, simulate
from perfsim.events.serving.state import BLOCK_TOKENS, KINDS, blocks_for
from perfsim.events.trace import write_chrome_trace
from perfsim.graph.transformer import Pass, expert_group_scale
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

TRACE_ITERATIONS = 200_000  # iterations written to a Chrome trace at most


def _capacity(plan, tokens_per_pass):
    """``(feasible, reason, kv_tokens_per_instance, grid)`` from the estimate memory model."""
    args = {**plan, "mode": "inference", "batch": 1, "prompt_len": int(tokens_per_pass), "gen_len": 1}
    grid = expand(args)
    dp = build(grid)["dp"]
    dp = float(np.asarray(dp))
    if math.isfinite(dp) and dp >= 1 and dp == int(dp):
        grid = expand({**args, "batch": int(dp)})  # one sequence of the pass per replica
    out = evaluate_grid(grid)
    return bool(out["feasible"][0]), out["reason"][0], float(out["kv_cache_capacity_tokens"][0]), grid


def _optimal(c, *, batch, prompt, gen, replicas, prefill_replicas=None):
    """NanoFlow-style ceiling: the tokens/s the compute, memory and network rates allow at ``batch``."""
    one = np.ones(1)
    decode = Pass(tokens=batch * one, seqs=batch * one, q_len=one, kv_len=(prompt + gen / 2.0) * one,
                  causal=0.0 * one, logits_tokens=batch * one)
    pre = Pass(tokens=batch * prompt * one, seqs=batch * one, q_len=prompt * one, kv_len=prompt * one,
               causal=one, logits_tokens=batch * one)
    _, d = forward_time(c, decode)
    _, p = forward_time(c, pre)
    pp = float(np.asarray(c["pp"]))
    link_bw = float(np.where(c["tp"] > c["devices_per_node"], c["scaleout_bw"], c["scaleup_bw"]))
    rates = {"compute": float(np.asarray(c["peak_flops"])), "memory": float(np.asarray(c["hbm_bw"])),
             "network": link_bw}
    keys = {"compute": "flops", "memory": "hbm_bytes", "network": "link_bytes"}

    def per_request(parts, count):
        return {res: float(parts[keys[res]][0]) / pp * count / batch / rates[res] for res in rates}

    pre_s = per_request(p, 1.0)
    dec_s = per_request(d, max(gen - 1.0, 0.0))
    if prefill_replicas is None:
        times = {res: (pre_s[res] + dec_s[res]) / gen for res in rates}
        bound = max(times, key=times.get)
        tput = replicas / times[bound] if times[bound] > 0 else math.inf
    else:
        pre_rate = prefill_replicas * gen / max(pre_s.values())
        dec_rate = replicas * gen / max(max(dec_s.values()), 1e-30)
        times = {res: max(pre_s[res] / prefill_replicas, dec_s[res] / replicas) / gen for res in rates}
        bound = max(times, key=times.get)
        tput = min(pre_rate, dec_rate)
    info = {"batch": int(batch), "bound": bound}
    info.update({f"{res}_s_per_token": times[res] for res in rates})
    return tput, info


def _largest_static_batch(plan, top: int, longest_prompt: int) -> int:
    """A static batch not given: the largest, up to ``top``, whose prefill pass fits the device (by
    bisection on the same capacity check; ``top`` where even one prompt does not fit, which then says
    why)."""
    if _capacity(plan, top * longest_prompt)[0]:
        return top
    low, high = 0, top
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if _capacity(plan, mid * longest_prompt)[0] else (low, mid)
    return low or top


def _engine_limits(plan):
    """``(max_num_seqs, max_num_batched_tokens)`` of the engine the plan runs on (NaN: none given)."""
    c = build(expand({**plan, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1}))
    return tuple(float(np.asarray(c[key]).ravel()[0]) for key in ("max_num_seqs", "max_num_batched_tokens"))


def run_scenario(**scenario) -> dict:
    """Simulate a serving scenario; the dict :func:`perfsim.serve` returns."""
    plan, o = check_scenario(scenario)
    serving_limits(o, *_engine_limits(plan))
    num = o["num_requests"] if o["num_requests"] is not None else (None if o["trace"] is not None else DEFAULT_REQUESTS)
    requests = make_requests(num_requests=num, prompt_len=o["prompt_len"], gen_len=o["gen_len"],
                             arrival_rate=o["arrival_rate"], trace=o["trace"], seed=o["seed"])
    n_req = requests.n
    scheduler = o["scheduler"]
    max_batch = o["max_batch"]
    longest = int(np.max(requests.prompt_len + requests.gen_len))
    longest_prompt = int(np.max(requests.prompt_len))

    if scheduler == "static" and scenario.get("max_batch") is None:
        max_batch = _largest_static_batch(plan, min(max_batch, n_req), longest_prompt)
        o["max_batch"] = max_batch
    # the largest pass an instance runs sizes its activation memory (vLLM profiles it at start-up)
    if scheduler == "static":
        pass_tokens = min(max_batch, n_req) * longest_prompt
    elif scheduler == "chunked-prefill":
        pass_tokens = max(o["chunk_size"], max_batch)
    else:
        pass_tokens = max(o["max_prefill_tokens"], longest)

    disagg = o["disaggregate"]
    base_extra = {"scheduler": scheduler, "requests": n_req, "max_batch": max_batch,
                  **{key: o[key] for key in ("max_batched_tokens", "max_prefill_tokens", "chunk_size")}}
    if disagg is not None:
        p_dev, d_dev = disagg
        if plan.get("num_devices") is not None and plan["num_devices"] != p_dev + d_dev:
            raise InputError(f"is {plan['num_devices']} but disaggregate {p_dev}:{d_dev} uses {p_dev + d_dev} devices",
                             field="num_devices")
        plan = {**plan, "num_devices": p_dev + d_dev}
        feasible, reason, kv_tokens, grid = _capacity(plan, max(o["max_batch"], 1))
        p_feasible, p_reason, p_kv_tokens, _ = _capacity(plan, max(
            o["chunk_size"] if scheduler == "chunked-prefill" else o["max_prefill_tokens"], longest))
        if feasible and not p_feasible:
            feasible, reason = p_feasible, f"prefill instances: {p_reason}"
    else:
        feasible, reason, kv_tokens, grid = _capacity(plan, pass_tokens)
        p_kv_tokens = kv_tokens
    c = build(grid)
    size = round(float(np.asarray(c["tp"] * c["pp"] * c["cp"])))
    devices = float(np.asarray(c["num_devices"]))
    if disagg is not None and feasible and (p_dev % size or d_dev % size):
        feasible, reason = False, (f"disaggregate {p_dev}:{d_dev}: each pool must hold whole instances of "
                                   f"tp x pp x cp = {size} devices")
    if not feasible:
        if scheduler == "static" and reason and reason.startswith("does not fit"):
            reason = (f"a static batch of {min(max_batch, n_req)} prompts of up to {longest_prompt:,} tokens "
                      f"{reason} (lower max_batch)")
        return empty_result(reason, n_req, base_extra)

    kv_blocks = int(kv_tokens // BLOCK_TOKENS)
    p_kv_blocks = int(p_kv_tokens // BLOCK_TOKENS)
    need_total = blocks_for(requests.prompt_len + requests.gen_len)
    fits = need_total <= kv_blocks
    if disagg is not None:
        fits &= blocks_for(requests.prompt_len + requests.gen_len) <= p_kv_blocks
    dropped = int(np.count_nonzero(~fits))
    drop_reason = None
    if dropped:
        worst = int(np.max(requests.prompt_len + requests.gen_len))
        drop_reason = (f"{dropped} of {n_req} requests cannot fit the KV cache even alone: the longest needs "
                       f"{worst:,} tokens, an instance holds {min(kv_tokens, p_kv_tokens):,.0f}")
        requests = Requests(requests.arrival_s[fits], requests.prompt_len[fits], requests.gen_len[fits])
        if not requests.n:
            return empty_result(drop_reason, n_req, base_extra)
        longest = int(np.max(requests.prompt_len + requests.gen_len))

    if disagg is not None:
        instances, prefill_instances = d_dev // size, p_dev // size
    else:
        instances, prefill_instances = round(float(np.asarray(c["dp"]))), 0
    # DEP: the data-parallel replicas that share an expert group run their MoE layers together, one
    # iteration at a time (a static batch runs its whole generation as one unit, and disaggregated
    # pools are not modelled in lock step: left apart)
    moe = float(np.asarray(c["experts"]).ravel()[0]) > 1.0 and scheduler != "static" and disagg is None
    sync = max(1, round(float(np.asarray(expert_group_scale(c)).ravel()[0]))) if moe else 1
    cfg = ServeConfig(scheduler=scheduler, max_batch=max_batch, chunk_size=o["chunk_size"],
                      max_prefill_tokens=o["max_prefill_tokens"], kv_blocks=kv_blocks, instances=instances,
                      prefill_instances=prefill_instances, prefill_kv_blocks=p_kv_blocks,
                      devices_per_instance=size, devices_per_node=int(float(np.asarray(c["devices_per_node"]))),
                      disaggregated=disagg is not None, sync_ranks=sync)
    if scheduler == "static":
        max_tokens, max_seqs = min(max_batch, requests.n) * int(np.max(requests.prompt_len)), min(max_batch, requests.n)
    else:
        max_tokens = max(pass_tokens, longest, max_batch)
        max_seqs = max_batch
    cost = IterationCost(c, max_tokens=max_tokens, max_seqs=max_seqs, max_context=longest + 1)

    shipped = {}  # seconds per (tokens, same node): the same cache size recurs across requests

    def transfer(tokens, same_node):
        key = (tokens, same_node)
        seconds = shipped.get(key)
        if seconds is None:
            seconds = shipped[key] = float(kv_transfer_s(c, tokens, same_node=same_node))
        return seconds

    sim = simulate(requests, cfg, cost, transfer=transfer)
    result = summarise(c, cost, cfg, requests, sim, o, n_req, dropped, devices, kv_tokens)
    result["feasible"] = dropped == 0
    result["reason"] = drop_reason
    if o["trace_out"] is not None:
        result["breakdown"]["trace"] = _write_trace(o["trace_out"], sim, cfg, requests, result)
    bound, info = _bound(c, cfg, requests, kv_tokens)
    result["optimal_throughput_tokens_per_s"] = bound
    result["breakdown"]["optimal"] = info
    return result


def _bound(c, cfg, requests, kv_tokens):
    prompt = float(np.mean(requests.prompt_len))
    gen = float(np.mean(requests.gen_len))
    batch = int(max(1, min(cfg.max_batch, math.floor(kv_tokens / (prompt + gen / 2.0)))))
    if cfg.disaggregated:
        return _optimal(c, batch=batch, prompt=prompt, gen=gen, replicas=cfg.instances,
                        prefill_replicas=cfg.prefill_instances)
    return _optimal(c, batch=batch, prompt=prompt, gen=gen, replicas=cfg.instances)


def _write_trace(path, sim, cfg, requests, result):
    rows = []
    for name, _role, rec, _busy in sim.instances:
        if len(rec):
            rows.append((name, rec))
    total = sum(len(rec) for _, rec in rows)
    if total > TRACE_ITERATIONS:
        starts = np.sort(np.concatenate([rec[:, 0] for _, rec in rows]))
        cutoff = starts[TRACE_ITERATIONS - 1]
        rows = [(name, rec[rec[:, 0] <= cutoff]) for name, rec in rows]
        kept = sum(len(rec) for _, rec in rows)
        if kept > TRACE_ITERATIONS:  # ties at the cutoff
            rows = [(name, rec[rec[:, 0] < cutoff]) for name, rec in rows]
    written = sum(len(rec) for _, rec in rows)
    note = (f"all {total} iterations" if written == total
            else f"first {written} of {total} iterations (trace capped at {TRACE_ITERATIONS})")

    def slices():  # generated while the file is written: no list of a million dicts
        yield {"process": "perfsim", "track": "run", "name": "serve", "cat": "run",
               "start_s": float(np.min(requests.arrival_s)), "dur_s": result["breakdown"]["makespan_s"],
               "args": {"scheduler": cfg.scheduler, "requests": int(requests.n), "iterations": note}}
        for name, rec in rows:
            for row in rec.tolist():
                t, dur, kind, tokens, _logits, n_dec, _ctx, n_pre, _p, _used, _running = row
                yield {"process": name, "track": "iterations", "name": KINDS[int(kind)], "cat": "iteration",
                       "start_s": t, "dur_s": dur,
                       "args": {"batch": int(n_dec + n_pre), "prefill_tokens": int(tokens - n_dec),
                                "decode_tokens": int(n_dec)}}

    def counters():
        for name, rec in rows:
            blocks = cfg.prefill_kv_blocks if name.startswith("prefill") else cfg.kv_blocks
            for row in rec.tolist():
                t, used, running = row[0], row[9], row[10]
                yield {"process": name, "track": "counters", "name": "running_requests", "time_s": t,
                       "value": running}
                yield {"process": name, "track": "counters", "name": "kv_cache_used", "time_s": t,
                       "value": used / max(blocks, 1)}

    write_chrome_trace(path, slices(), counters())
    return {"path": os.fspath(path), "iterations_written": written, "iterations_total": total}
