"""What a serving run measured: latency statistics, throughput, and power and energy.

Power comes from :mod:`perfsim.cost.power` applied to the work of every simulated iteration
(FLOPs, device-memory and fabric bytes from the same cost tables), plus KV-cache shipments between
disaggregated pools; between iterations a device draws its idle power (``idle_w``), the active
floor counting only while an iteration runs.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.cost.power import COMPONENTS, device_power
from perfsim.cost.wall import host_floor_w, nameplate_w_per_node, run_energy
from perfsim.events import power_trace
from perfsim.events.serving.iteration_cost import kv_transfer_bytes
from perfsim.events.serving.state import BLOCK_TOKENS, KINDS

_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def _no_stats():
    """The statistics of nothing: every one None."""
    return dict.fromkeys(("mean", *(key for key, _ in _PERCENTILES)))


def _stats(x):
    x = np.asarray(x, dtype=float)
    if not len(x):
        return _no_stats()
    out = {"mean": float(np.mean(x))}
    for (key, _), value in zip(_PERCENTILES, np.percentile(x, [q for _, q in _PERCENTILES]).tolist(), strict=True):
        out[key] = value
    return out


def stable_order(values):
    """``np.argsort(values, kind="stable")`` of a float array: where no value is negative (nor -0.0)
    or NaN, the sort of their bit patterns as whole numbers (ordered as the values are, and sorted
    faster)."""
    plain = len(values) and not (np.isnan(values.max()) or np.signbit(values).any())
    return np.argsort(values.view(np.int64) if plain else values, kind="stable")


def weighted_stats(values, weights):
    """Mean and percentiles of ``values`` each repeated ``weights`` times (numpy's linear method)."""
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    keep = weights > 0
    if not keep.all():
        values, weights = values[keep], weights[keep]
    if not len(values):
        return _no_stats()
    order = stable_order(values)
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


def empty_result(reason, requests, extra=None):
    """The result of a run that served nothing: ``reason``, ``requests`` dropped, ``extra`` as breakdown."""
    out = {"feasible": False, "reason": reason}
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_latency_s"):
        out[key] = _no_stats()
    for key in ("throughput_tokens_per_s", "requests_per_s", "goodput_requests_per_s", "slo_attainment",
                "power_w_per_device", "power_w_per_node", "energy_j", "energy_wall_j", "energy_j_per_token",
                "optimal_throughput_tokens_per_s"):
        out[key] = None
    out["completed"] = 0
    out["dropped"] = int(requests)
    out["breakdown"] = extra or {}
    return out


def summarise(c, cost, cfg, requests, sim, o, n_req, dropped, devices, kv_tokens):
    """The result of simulation ``sim``: latency statistics, throughput, SLO goodput, power and
    energy, and the breakdown (iterations, KV use, energy by part, cluster power)."""
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
        # without an SLO nothing was asked of the requests: no attainment to report (goodput is then
        # the completed requests' rate)
        "slo_attainment": (int(np.count_nonzero(good)) / n_req
                           if o["ttft_slo_s"] is not None or o["tpot_slo_s"] is not None else None),
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
        # the lengths, as a column of the records (the sums over them below read it so: a strided
        # column is summed in another order) and in one piece (the same numbers, for elementwise use)
        dur = rec[:, 1]
        seconds = np.ascontiguousarray(dur)
        work = cost.work(rec[:, 3], rec[:, 4], rec[:, 5], rec[:, 6], rec[:, 7], rec[:, 8], time=False)
        clocked = {} if cost.cap is None else {"clock": work["clock_ratio"], "full_seconds": work["full_s"]}
        # the time each device waits with no kernel running (perfsim.cost.power.host_gap_floor): host time
        # the kernels do not hide (perfsim.cost.host) and launch gaps
        parts = device_power(c, seconds, work["flops"], work["hbm_bytes"], work["link_bytes"], **clocked,
                             gap_seconds=work["gap_s"])
        for comp in COMPONENTS:
            energy[comp] += float(np.sum(parts[comp] * seconds)) * size
        series.append((name, rec[:, 0], seconds, parts["power_w"]))
        energy_j = parts["power_w"] * seconds
        clocked_s = work["clock_ratio"] * seconds if clocked else None
        kinds = np.ascontiguousarray(rec[:, 2])
        for k, kind in enumerate(KINDS):
            mine = kinds == k
            if not mine.any():  # (its sums add nothing)
                continue
            busy[kind] += float(np.sum(seconds[mine]))
            by_kind[kind] += float(np.sum(energy_j[mine])) * size
            if clocked:
                clock_time[kind] += float(np.sum(clocked_s[mine]))
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
        "scheduler": cfg.scheduler, "max_batch": cfg.max_batch, "max_batched_tokens": o["max_batched_tokens"],
        "max_prefill_tokens": cfg.max_prefill_tokens, "chunk_size": cfg.chunk_size,
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
        "sync_ranks": cfg.sync_ranks,
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
    col = {k: float(np.asarray(c[k])) for k in ("idle_w", "psu_efficiency")}
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
    nameplate = float(np.asarray(nameplate_w_per_node(c)))
    stats = {"window_s": window, "servers": nodes, "provisioned_w": nodes * nameplate,
             "devices_w": power_trace.stats(means, device_w),
             "wall_w": power_trace.stats(wall_means, power_trace.wall_power(device_w, **wall))}
    if not o["power_trace"]:
        return {"stats": stats}
    return {"stats": stats, "window_s": window, "time_s": (edges - start).tolist(), "devices_w": means.tolist(),
            "wall_w": wall_means.tolist(),
            "instances": [{"name": name, "devices": size, "start_s": (t0 - start).tolist(), "duration_s": dur.tolist(),
                           "power_w_per_device": p.tolist()} for name, t0, dur, p in series]}
