"""A serving scenario: arguments → request set → simulation → CONTRACT result.

The deployment (model, hardware, parallelism, dtypes, runtime) is an ``estimate`` plan of one
row: its columns drive the cost tables, its memory model gives the KV-cache capacity of an
instance under ``gpu_memory_utilization``, and its checks decide whether the plan can run at
all. Power comes from :mod:`perfsim.cost.power` applied to the work of every simulated
iteration (FLOPs, device-memory and fabric bytes from the same cost tables), plus KV-cache
shipments between disaggregated pools; between iterations a device draws its idle power
(``idle_w``), the active floor counting only while an iteration runs.
"""

from __future__ import annotations

import math
import os

import numpy as np

from perfsim.analytical.evaluate import evaluate_grid
from perfsim.analytical.inference import forward_time
from perfsim.cost.power import COMPONENTS, device_power
from perfsim.cost.wall import host_floor_w, run_energy
from perfsim.errors import InputError, check_positive, check_whole, unknown
from perfsim.events import power_trace
from perfsim.events.serving.iteration_cost import IterationCost, kv_transfer_bytes, kv_transfer_s
from perfsim.events.serving.requests import Requests, check_lengths, make_requests
from perfsim.events.serving.simulator import SCHEDULERS, ServeConfig, simulate
from perfsim.events.serving.state import BLOCK_TOKENS, KINDS, blocks_for
from perfsim.events.trace import write_chrome_trace
from perfsim.graph.transformer import Pass
from perfsim.plan.columns import build
from perfsim.plan.grid import ARGUMENTS, check_value, expand

#: serve's own arguments and their defaults
SERVE_ARGUMENTS = {
    "arrival_rate": None, "trace": None, "num_requests": None, "prompt_len": 2048, "gen_len": 256,
    "scheduler": "continuous", "max_batch": 256, "chunk_size": 512, "max_prefill_tokens": 8192,
    "disaggregate": None, "ttft_slo_s": None, "tpot_slo_s": None, "seed": 0, "trace_out": None,
    "power_trace": False, "power_window_s": 1.0,
}
DEFAULT_REQUESTS = 1000
#: estimate arguments that describe a training step or a fixed batch, not a deployment
_NOT_FOR_SERVE = {
    "batch": "serve forms its batches itself; use max_batch",
    "seq_len": "is a training argument", "global_batch": "is a training argument",
    "micro_batch": "is a training argument", "zero": "is a training argument",
    "zero_shard_size": "is a training argument", "schedule": "is a training argument",
    "virtual_stages": "is a training argument", "recompute": "is a training argument",
    "finetune": "is a training argument", "lora_rank": "is a training argument",
    "train_tokens": "is a training argument",
}
TRACE_ITERATIONS = 200_000  # iterations written to a Chrome trace at most
_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def parse_disaggregate(value):
    """``"P:D"`` → ``(P, D)`` devices for prefill and decode instances."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        parts = list(value)
    elif isinstance(value, str) and value.count(":") == 1:
        parts = value.split(":")
    else:
        raise InputError(f"expected 'P:D' (devices for prefill and for decode instances), got {value!r}",
                         field="disaggregate")
    out = []
    for part in parts:
        try:
            n = int(str(part).strip())
        except ValueError:
            raise InputError(f"expected 'P:D' with whole numbers of devices, got {value!r}",
                             field="disaggregate") from None
        if n < 1 or str(part).strip() != str(n):
            raise InputError(f"expected 'P:D' with whole numbers of devices >= 1, got {value!r}",
                             field="disaggregate")
        out.append(n)
    return tuple(out)


def check_scenario(scenario: dict):
    """Split and check the arguments: ``(plan, options)``; raises :class:`InputError`."""
    plan, options = {}, dict(SERVE_ARGUMENTS)
    for name, value in scenario.items():
        if name in SERVE_ARGUMENTS:
            options[name] = value
        elif name in _NOT_FOR_SERVE:
            raise InputError(_NOT_FOR_SERVE[name] + "; serve simulates an inference deployment", field=name)
        elif name == "mode":
            if value != "inference":
                raise InputError(f"serve simulates inference, got mode {value!r}", field=name)
        elif name in ARGUMENTS:
            if isinstance(value, list) and name != "place":
                raise InputError("serve takes one value per argument", field=name)
            if name == "place" and value:  # NPU/GPU + PIM overlap is priced per step by estimate only
                raise InputError("heterogeneous placement is modelled by estimate (fixed batches), not yet "
                                 "by the serving simulator; leave place out", field=name)
            if name == "hardware" and isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):
                raise InputError("serve takes one value per what-if key", field=name)
            plan[name] = value
        else:
            names = [n for n in (*ARGUMENTS, *SERVE_ARGUMENTS) if n not in _NOT_FOR_SERVE]
            raise unknown("argument", name, names)
    o = options
    if o["scheduler"] not in SCHEDULERS:
        raise unknown("scheduler", o["scheduler"], SCHEDULERS, field="scheduler")
    for name in ("max_batch", "chunk_size", "max_prefill_tokens"):
        o[name] = check_whole(o[name], name, 1)
    o["seed"] = check_whole(o["seed"], "seed", 0)
    if o["num_requests"] is not None:
        o["num_requests"] = check_whole(o["num_requests"], "num_requests", 1)
    for name in ("arrival_rate", "ttft_slo_s", "tpot_slo_s", "power_window_s"):
        if o[name] is not None:
            o[name] = check_positive(o[name], name)
    if not isinstance(o["power_trace"], (bool, np.bool_)):
        raise InputError(f"expected true or false, got {o['power_trace']!r}", field="power_trace")
    if o["trace"] is not None:
        if not isinstance(o["trace"], (str, os.PathLike)):
            raise InputError(f"expected a path to a CSV file, got {o['trace']!r}", field="trace")
        if o["arrival_rate"] is not None:
            raise InputError("give arrival_rate or a trace, not both", field="arrival_rate")
        for name in ("prompt_len", "gen_len"):
            if name in scenario:
                raise InputError("the trace gives the lengths; leave it out", field=name)
    else:
        o["prompt_len"] = check_lengths(o["prompt_len"], "prompt_len")
        o["gen_len"] = check_lengths(o["gen_len"], "gen_len")
    if o["disaggregate"] is not None:
        o["disaggregate"] = parse_disaggregate(o["disaggregate"])
        if o["scheduler"] == "static":
            raise InputError("disaggregated serving batches iteration by iteration: use continuous or "
                             "chunked-prefill", field="scheduler")
        if plan.get("dp") is not None:
            raise InputError("with disaggregate the instances come from 'P:D'; leave dp out", field="dp")
    if o["trace_out"] is not None:
        if not isinstance(o["trace_out"], (str, os.PathLike)):
            raise InputError(f"expected a file path, got {o['trace_out']!r}", field="trace_out")
        directory = os.path.dirname(os.path.abspath(os.fspath(o["trace_out"])))
        if not os.path.isdir(directory):
            raise InputError(f"directory {directory} does not exist", field="trace_out")
    for name in ("model", "hardware"):
        if plan.get(name) is None:
            raise InputError("is required", field=name)
    for name, value in plan.items():
        if name not in ("model", "hardware"):
            check_value(name, value)
    return plan, o


def _stats(x):
    x = np.asarray(x, dtype=float)
    if not len(x):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    out = {"mean": float(np.mean(x))}
    for key, q in _PERCENTILES:
        out[key] = float(np.percentile(x, q))
    return out


def weighted_stats(values, weights):
    """Mean and percentiles of ``values`` each repeated ``weights`` times (numpy's linear method)."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if not len(values):
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    out = {"mean": float(np.dot(values, weights) / total)}
    for key, q in _PERCENTILES:
        h = (total - 1.0) * q / 100.0
        lo = math.floor(h)
        i = min(int(np.searchsorted(cumulative, lo, side="right")), len(values) - 1)
        j = min(int(np.searchsorted(cumulative, lo + 1, side="right")), len(values) - 1)
        out[key] = float(values[i] + (h - lo) * (values[j] - values[i]))
    return out


def _empty_result(reason, requests, extra=None):
    stats = {"mean": None, "p50": None, "p90": None, "p99": None}
    out = {"feasible": False, "reason": reason}
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_latency_s"):
        out[key] = dict(stats)
    for key in ("throughput_tokens_per_s", "requests_per_s", "goodput_requests_per_s", "slo_attainment",
                "power_w_per_device", "power_w_per_node", "energy_j", "energy_wall_j", "energy_j_per_token",
                "optimal_throughput_tokens_per_s"):
        out[key] = None
    out["completed"] = 0
    out["dropped"] = int(requests)
    out["breakdown"] = extra or {}
    return out


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


def run_scenario(**scenario) -> dict:
    """Simulate a serving scenario; the dict :func:`perfsim.serve` returns."""
    plan, o = check_scenario(scenario)
    num = o["num_requests"] if o["num_requests"] is not None else (None if o["trace"] is not None else DEFAULT_REQUESTS)
    requests = make_requests(num_requests=num, prompt_len=o["prompt_len"], gen_len=o["gen_len"],
                             arrival_rate=o["arrival_rate"], trace=o["trace"], seed=o["seed"])
    n_req = requests.n
    scheduler = o["scheduler"]
    max_batch = o["max_batch"]
    longest = int(np.max(requests.prompt_len + requests.gen_len))
    longest_prompt = int(np.max(requests.prompt_len))

    # the largest pass an instance runs sizes its activation memory (vLLM profiles it at start-up)
    if scheduler == "static":
        pass_tokens = min(max_batch, n_req) * longest_prompt
    elif scheduler == "chunked-prefill":
        pass_tokens = max(o["chunk_size"], max_batch)
    else:
        pass_tokens = max(o["max_prefill_tokens"], longest)

    disagg = o["disaggregate"]
    base_extra = {"scheduler": scheduler, "requests": n_req}
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
        return _empty_result(reason, n_req, base_extra)

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
            return _empty_result(drop_reason, n_req, base_extra)
        longest = int(np.max(requests.prompt_len + requests.gen_len))

    if disagg is not None:
        instances, prefill_instances = d_dev // size, p_dev // size
    else:
        instances, prefill_instances = round(float(np.asarray(c["dp"]))), 0
    cfg = ServeConfig(scheduler=scheduler, max_batch=max_batch, chunk_size=o["chunk_size"],
                      max_prefill_tokens=o["max_prefill_tokens"], kv_blocks=kv_blocks, instances=instances,
                      prefill_instances=prefill_instances, prefill_kv_blocks=p_kv_blocks,
                      devices_per_instance=size, devices_per_node=int(float(np.asarray(c["devices_per_node"]))),
                      disaggregated=disagg is not None)
    if scheduler == "static":
        max_tokens, max_seqs = min(max_batch, requests.n) * int(np.max(requests.prompt_len)), min(max_batch, requests.n)
    else:
        max_tokens = max(pass_tokens, longest, max_batch)
        max_seqs = max_batch
    cost = IterationCost(c, max_tokens=max_tokens, max_seqs=max_seqs, max_context=longest + 1)

    def transfer(tokens, same_node):
        return kv_transfer_s(c, tokens, same_node=same_node)

    sim = simulate(requests, cfg, cost, transfer=transfer)
    result = _summarise(c, cost, cfg, requests, sim, o, n_req, dropped, devices, kv_tokens)
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


def _summarise(c, cost, cfg, requests, sim, o, n_req, dropped, devices, kv_tokens):
    arrival = requests.arrival_s
    done = np.isfinite(sim.finish_s)
    completed = int(np.count_nonzero(done))
    dropped += requests.n - completed
    start = float(np.min(arrival))
    end = float(np.max(sim.finish_s[done])) if completed else start
    span = end - start
    ttft = (sim.first_token_s - arrival)[done]
    e2e = (sim.finish_s - arrival)[done]
    gen = requests.gen_len[done]
    multi = gen > 1
    tpot = ((sim.finish_s - sim.first_token_s)[done][multi]) / (gen[multi] - 1)
    good = np.ones(completed, dtype=bool)
    if o["ttft_slo_s"] is not None:
        good &= ttft <= o["ttft_slo_s"]
    if o["tpot_slo_s"] is not None:
        tpot_all = np.zeros(completed)
        tpot_all[multi] = tpot
        good &= tpot_all <= o["tpot_slo_s"]
    tokens = float(np.sum(gen))
    per_s = (lambda x: x / span) if span > 0 else (lambda x: None)
    result = {
        "feasible": True, "reason": None,
        "ttft_s": _stats(ttft), "tpot_s": _stats(tpot), "itl_s": weighted_stats(sim.itl_value_s, sim.itl_weight),
        "e2e_latency_s": _stats(e2e),
        "throughput_tokens_per_s": per_s(tokens), "requests_per_s": per_s(completed),
        "goodput_requests_per_s": per_s(int(np.count_nonzero(good))),
        "slo_attainment": int(np.count_nonzero(good)) / n_req,
        "completed": completed, "dropped": dropped,
    }

    # work and power, iteration by iteration; idle devices between iterations
    size = cfg.devices_per_instance
    energy = dict.fromkeys(COMPONENTS, 0.0)
    busy = {kind: 0.0 for kind in KINDS}
    idle_s = 0.0
    batch_time = 0.0
    kv_time = 0.0
    busy_total = 0.0
    iterations = 0
    by_kind = dict.fromkeys(KINDS, 0.0)  # devices' energy in iterations of each kind, J
    clock_time = dict.fromkeys(KINDS, 0.0)  # clock ratio x seconds, per kind (power cap)
    lowest = 1.0
    series = []  # per instance: iteration starts, lengths, power per device, devices
    for name, role, rec, busy_s in sim.instances:
        idle_s += max(span - busy_s, 0.0)
        energy["idle"] += float(np.asarray(c["idle_w"])) * max(span - busy_s, 0.0) * size
        if not len(rec):
            continue
        iterations += len(rec)
        dur = rec[:, 1]
        work = cost.work(rec[:, 3], rec[:, 4], rec[:, 5], rec[:, 6], rec[:, 7], rec[:, 8])
        clocked = {} if cost.cap is None else {"clock": work["clock_ratio"], "full_seconds": work["full_s"]}
        parts = device_power(c, dur, work["flops"], work["hbm_bytes"], work["link_bytes"], **clocked)
        for comp in COMPONENTS:
            energy[comp] += float(np.sum(parts[comp] * dur)) * size
        series.append((name, rec[:, 0], dur, parts["power_w"]))
        for k, kind in enumerate(KINDS):
            mine = rec[:, 2] == k
            busy[kind] += float(np.sum(dur[mine]))
            by_kind[kind] += float(np.sum((parts["power_w"] * dur)[mine])) * size
            if clocked:
                clock_time[kind] += float(np.sum((work["clock_ratio"] * dur)[mine]))
        if clocked:
            lowest = min(lowest, float(np.min(work["clock_ratio"])))
        blocks = cfg.prefill_kv_blocks if role == "prefill" else cfg.kv_blocks
        batch_time += float(np.dot(rec[:, 10], dur))
        kv_time += float(np.dot(rec[:, 9], dur)) / max(blocks, 1)
        busy_total += float(np.sum(dur))
    transfers = sim.kv_transfers
    if len(transfers):
        sent = kv_transfer_bytes(c, transfers[:, 0]) * size
        energy["link"] += float(np.sum(sent)) * float(np.asarray(c["link_j_per_byte"]))
        energy["memory"] += 2.0 * float(np.sum(sent)) * float(np.asarray(c["memory_j_per_byte"]))
    parts_j = {k: v / devices for k, v in energy.items()}
    device_j = sum(parts_j.values())
    power = run_energy(c, device_j, span, tokens, parts_j)
    for key in ("power_w_per_device", "power_w_per_node", "energy_j", "energy_wall_j", "energy_j_per_token"):
        value = float(np.asarray(power[key]))
        result[key] = value if math.isfinite(value) else None

    breakdown = {
        "scheduler": cfg.scheduler,
        "makespan_s": span,
        "busy_s": busy,
        "idle_s": idle_s,
        "iterations": iterations,
        "preemptions": sim.preemptions,
        "mean_batch_size": batch_time / busy_total if busy_total else None,
        "kv_utilisation": kv_time / busy_total if busy_total else None,
        "kv_cache_capacity_tokens": kv_tokens,
        "kv_blocks": cfg.kv_blocks,
        "instances": cfg.instances + cfg.prefill_instances,
        "devices_per_instance": size,
        "generated_tokens": tokens,
        "energy": {k.split(".", 2)[2]: float(np.asarray(v)) for k, v in power.items()
                   if k.startswith("breakdown.energy.")},
    }
    # devices' energy by iteration kind (the idle gaps between iterations apart), per generated token
    breakdown["energy"].update({f"{kind}_j": by_kind[kind] for kind in KINDS})
    breakdown["energy"]["between_iterations_j"] = float(np.asarray(c["idle_w"])) * idle_s * size
    if cost.cap is not None:
        breakdown["power_cap"] = {
            "power_cap_w": cost.cap,
            "clock_ratio": {kind: clock_time[kind] / busy[kind] if busy[kind] else None for kind in KINDS},
            "lowest_clock_ratio": lowest,
            "iterations_over_cap": cost.over_cap,
        }
    trace = _cluster_power(c, cfg, series, devices, float(np.min(arrival)), span, o)
    breakdown["cluster_power"] = trace.pop("stats")
    if o["power_trace"]:
        result["power_trace"] = trace
    if cfg.disaggregated:
        breakdown["prefill_instances"] = cfg.prefill_instances
        breakdown["decode_instances"] = cfg.instances
        breakdown["prefill_kv_cache_capacity_tokens"] = cfg.prefill_kv_blocks * BLOCK_TOKENS
        breakdown["kv_transfer"] = {"count": len(transfers),
                                    "mean_s": float(np.mean(transfers[:, 1])) if len(transfers) else None,
                                    "scale_up_fraction": float(np.mean(transfers[:, 2])) if len(transfers) else None}
    result["breakdown"] = breakdown
    return result


def _cluster_power(c, cfg, series, devices, start, span, o):
    """Power of every device of the run over time, windowed; statistics at the devices and the wall.

    Returns ``stats`` (``window_s``, ``devices_w`` and ``wall_w`` statistics of window means, the
    servers and their ``provisioned_w``: nameplate power, every device at TDP) and the series
    (``time_s``, ``devices_w``, ``wall_w`` per window; ``instances``: each instance's iterations) where
    ``power_trace`` asks for it.
    """
    col = {k: float(np.asarray(c[k])) for k in ("idle_w", "host_w", "psu_efficiency", "tdp_w")}
    host_w = float(np.asarray(host_floor_w(c)))  # the serving loop runs nothing on the hosts' CPUs, drives, NICs
    per_node = cfg.devices_per_node
    nodes = math.ceil(devices / per_node)
    size = cfg.devices_per_instance
    end = start + max(span, 0.0)
    times, device_w = power_trace.cluster_series(
        [(t0, dur, p, size) for _, t0, dur, p in series], idle_w=col["idle_w"], devices=devices, start_s=start,
        end_s=end if end > start else start + 1e-9)
    wall = dict(nodes=nodes, devices=devices, devices_per_node=per_node, idle_w=col["idle_w"], host_w=host_w,
                psu_efficiency=col["psu_efficiency"])
    window = o["power_window_s"]
    edges, means = power_trace.window_means(times, device_w, window)
    wall_means = power_trace.wall_power(means, **wall)
    nameplate = (per_node * col["tdp_w"] + col["host_w"]) / col["psu_efficiency"]
    stats = {"window_s": window, "servers": nodes, "provisioned_w": nodes * nameplate,
             "devices_w": power_trace.stats(means, device_w),
             "wall_w": power_trace.stats(wall_means, power_trace.wall_power(device_w, **wall))}
    if not o["power_trace"]:
        return {"stats": stats}
    return {"stats": stats, "window_s": window, "time_s": (edges - start).tolist(), "devices_w": means.tolist(),
            "wall_w": wall_means.tolist(),
            "instances": [{"name": name, "devices": size, "start_s": (t0 - start).tolist(), "duration_s": dur.tolist(),
                           "power_w_per_device": p.tolist()} for name, t0, dur, p in series]}


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
