"""Power oversubscription of an inference cluster: how many more servers fit a power budget.

A row of servers is provisioned for its servers' nameplate power (every device at TDP, the host
at full load), yet serving rarely draws it: the memory-bound decode keeps devices far below TDP
and prefill bursts are short. POLCA (Patel et al., ASPLOS'24, "Characterizing Power Management
Opportunities for LLMs in the Cloud") uses the gap to place about 30 % more inference servers
under the same power, capping the devices' clocks when the row nears its budget.

:func:`oversubscription` runs the serving simulator (:func:`perfsim.serve`) at a base count of
servers and at larger counts, each under the base's budget: where the cluster's peak power (the
largest one-second mean at the wall, :mod:`perfsim.events.power_trace`) passes the budget, it
caps every device (``power_cap_w``, the DVFS model of :mod:`perfsim.cost.power`) at the
highest of a list of caps that keeps the peak within it. A count fits when the peak is within
the budget and p99 TTFT and TPOT meet their objectives. :func:`plot_headroom` draws the curve.
The caps are searched by bisection over the list, a lower cap never drawing more.
A static cap is the conservative end of POLCA's controller, which caps only while the row is
near its budget.
"""

from __future__ import annotations

import math
from numbers import Integral

from perfsim.cost.wall import host_floor_w
from perfsim.errors import InputError, check_positive, unknown
from perfsim.specs.hardware import split_whatif

LOADS = ("per_server", "total")
#: caps tried where the peak passes the budget, as fractions of the device's TDP (highest first)
CAP_FRACTIONS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
_NOT_HERE = ("dp", "num_devices", "arrival_rate", "num_requests", "power_cap_w", "trace", "disaggregate")


def _whole(value, field, minimum=1):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"expected a whole number >= {minimum}, got {value!r}", field=field)
    return int(value)


def nameplate_w(hardware) -> float:
    """A server's nameplate power at the wall: every device at TDP, the host at full load, W."""
    spec, overrides = split_whatif(hardware)
    tdp = overrides.get("tdp_w", spec["tdp_w"])
    per_node = overrides.get("devices_per_node", spec["devices_per_node"])
    return (per_node * tdp + spec["host_w"]) / spec["psu_efficiency"]


def oversubscription(*, base_servers, arrival_rate, ttft_slo_s, tpot_slo_s, servers=None, power_budget_w=None,
                     load="per_server", requests_per_server=None, num_requests=None, caps_w=None, **scenario) -> dict:
    """How many servers fit the power budget of ``base_servers`` servers, at p99 latency objectives.

    Parameters
    ----------
    base_servers : int
        Servers the budget was provisioned for.
    arrival_rate : float
        Requests/s (Poisson): per server (``load="per_server"``: every server keeps the base's
        share, so the cluster's load grows with it) or for the whole cluster (``load="total"``).
    ttft_slo_s, tpot_slo_s : float
        Objectives on p99 time to first token and p99 time per output token, s.
    servers : list of int, optional
        Server counts to try (default: ``base_servers`` up to twice as many).
    power_budget_w : float, optional
        Budget at the wall, W (default: ``base_servers`` x nameplate, :func:`nameplate_w`).
    load : {"per_server", "total"}
        How the load scales with the servers.
    requests_per_server, num_requests : int, optional
        Requests simulated: per server (``per_server`` load; default 60 s of arrivals) or in all
        (``total`` load; default 60 s of arrivals).
    caps_w : list of float, optional
        Per-device caps to try where the peak passes the budget, W (default: TDP x
        :data:`CAP_FRACTIONS`).
    **scenario
        The deployment and requests as :func:`perfsim.serve` takes them (``model``, ``hardware``,
        ``tp``, ``pp``, ``prompt_len``, ``gen_len``, ``max_batch``, ``scheduler``, ``seed``, ...).
        A server is one node (``devices_per_node`` devices) of ``devices_per_node / (tp x pp)``
        instances.

    Returns
    -------
    dict
        ``base_servers``, ``power_budget_w``, ``nameplate_w`` (per server), ``load``, ``curve``
        (one dict per server count: ``servers``, ``power_cap_w`` (None: uncapped), ``peak_w``,
        ``p99_w`` and ``mean_w`` (wall, one-second means), ``uncapped_peak_w``, ``ttft_p99_s``,
        ``tpot_p99_s``, ``throughput_tokens_per_s``, ``clock_ratio`` (time-weighted, prefill and
        decode), ``within_budget``, ``slo_met``, ``fits``), ``max_servers`` (the most servers that fit,
        every smaller count fitting too; None when the base does not) and ``extra_servers`` (the
        fraction more than the base).

    Examples
    --------
    >>> study = oversubscription(model="llama2-7b", hardware="a100-80gb", tp=8, base_servers=1, servers=[1, 2],
    ...                          arrival_rate=2.0, prompt_len=256, gen_len=32, ttft_slo_s=2.0, tpot_slo_s=0.2,
    ...                          requests_per_server=40)
    >>> [row["servers"] for row in study["curve"]], study["max_servers"] >= 1
    ([1, 2], True)
    """
    from perfsim.events.serving.scenario import run_scenario as serve

    base = _whole(base_servers, "base_servers")
    if load not in LOADS:
        raise unknown("load", load, LOADS, field="load")
    rate = check_positive(arrival_rate, "arrival_rate")
    ttft_slo, tpot_slo = check_positive(ttft_slo_s, "ttft_slo_s"), check_positive(tpot_slo_s, "tpot_slo_s")
    for name in _NOT_HERE:
        if name in scenario:
            raise InputError("the study sets it for every server count; leave it out", field=name)
    if scenario.get("hardware") is None:
        raise InputError("is required", field="hardware")
    spec, overrides = split_whatif(scenario["hardware"])
    per_node = int(overrides.get("devices_per_node", spec["devices_per_node"]))
    instance = scenario.get("tp", 1) * scenario.get("pp", 1) * scenario.get("cp", 1)
    if per_node % instance:
        raise InputError(f"a server of {per_node} devices does not hold whole instances of tp x pp x cp = {instance}",
                         field="tp")
    per_server = per_node // instance
    counts = list(range(base, 2 * base + 1)) if servers is None else servers
    if not isinstance(counts, (list, tuple)) or not counts:
        raise InputError("expected a list of server counts", field="servers")
    counts = sorted({_whole(n, "servers") for n in counts})
    if counts[0] > base:
        counts.insert(0, base)
    plate = nameplate_w(scenario["hardware"])
    budget = plate * base if power_budget_w is None else check_positive(power_budget_w, "power_budget_w")
    tdp = overrides.get("tdp_w", spec["tdp_w"])
    caps = [tdp * f for f in CAP_FRACTIONS] if caps_w is None else sorted(
        (check_positive(x, "caps_w") for x in caps_w), reverse=True)
    if requests_per_server is not None:
        requests_per_server = _whole(requests_per_server, "requests_per_server")
    if num_requests is not None:
        num_requests = _whole(num_requests, "num_requests")

    def run(n, cap):
        if load == "per_server":
            total_rate = rate * n
            requests = n * (requests_per_server or math.ceil(60.0 * rate))
        else:
            total_rate = rate
            requests = num_requests or math.ceil(60.0 * rate)
        return serve(**scenario, dp=n * per_server, arrival_rate=total_rate, num_requests=requests,
                     power_cap_w=cap, ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo)

    floor_w = (per_node * spec["idle_w"] + host_floor_w(spec)) / spec["psu_efficiency"]  # a server at idle
    curve = []
    for n in counts:
        free = run(n, None)
        result, cap = free, None
        if free["feasible"] and _peak(free) > budget:
            if n * floor_w > budget:  # no cap helps: idle devices and hosts alone pass the budget
                result, cap = run(n, caps[-1]), caps[-1]
            else:
                result, cap = _highest_fitting_cap(lambda x, n=n: run(n, x), caps, budget)
        curve.append(_row(n, cap, result, free, budget, ttft_slo, tpot_slo))
    fitting = [row["fits"] for row in curve]
    best = None
    for row, ok in zip(curve, fitting, strict=True):
        if row["servers"] < base:
            continue
        if not ok:
            break
        best = row["servers"]
    return {"base_servers": base, "power_budget_w": budget, "nameplate_w": plate, "load": load,
            "ttft_slo_s": ttft_slo, "tpot_slo_s": tpot_slo, "curve": curve, "max_servers": best,
            "extra_servers": None if best is None else best / base - 1.0}


def _highest_fitting_cap(run, caps, budget):
    """``(result, cap)`` of the highest cap in ``caps`` (descending) whose run keeps the peak within
    ``budget``, by bisection over the list (a lower cap never draws more); the lowest cap's run
    where none does."""
    lo, hi = 0, len(caps) - 1  # caps[hi] is the lowest; find the first index that fits
    runs = {}

    def fits(i):
        if i not in runs:
            runs[i] = run(caps[i])
        return runs[i]["feasible"] and _peak(runs[i]) <= budget

    if not fits(hi):
        return runs[hi], caps[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return runs[hi] if hi in runs else run(caps[hi]), caps[hi]


def _peak(result):
    return result["breakdown"]["cluster_power"]["wall_w"]["max"]


def _row(n, cap, result, free, budget, ttft_slo, tpot_slo):
    feasible = bool(result["feasible"])
    row = {"servers": n, "power_cap_w": cap, "feasible": feasible, "reason": result["reason"],
           "uncapped_peak_w": _peak(free) if free["feasible"] else None}
    if not feasible:
        row.update(peak_w=None, p99_w=None, mean_w=None, ttft_p99_s=None, tpot_p99_s=None,
                   throughput_tokens_per_s=None, clock_ratio=None, within_budget=False, slo_met=False, fits=False)
        return row
    wall = result["breakdown"]["cluster_power"]["wall_w"]
    clocks = (result["breakdown"].get("power_cap") or {}).get("clock_ratio", {})
    ttft, tpot = result["ttft_s"]["p99"], result["tpot_s"]["p99"]
    within = wall["max"] <= budget
    slo = ttft is not None and ttft <= ttft_slo and (tpot is None or tpot <= tpot_slo)
    row.update(peak_w=wall["max"], p99_w=wall["p99"], mean_w=wall["mean"], ttft_p99_s=ttft, tpot_p99_s=tpot,
               throughput_tokens_per_s=result["throughput_tokens_per_s"],
               clock_ratio={k: clocks.get(k, 1.0) for k in ("prefill", "decode")},
               within_budget=within, slo_met=slo, fits=within and slo)
    return row


def plot_headroom(study: dict, path=None, *, title=None):
    """Draw an :func:`oversubscription` study: peak power against the budget, and p99 latency
    against its objectives, per server count. Writes a PNG where ``path`` is given.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = [row for row in study["curve"] if row["feasible"]]
    base = study["base_servers"]
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = [row["servers"] for row in curve]
    kw = 1e-3
    top.plot(xs, [row["uncapped_peak_w"] * kw for row in curve], "o--", color="tab:gray", label="peak, uncapped")
    top.plot(xs, [row["peak_w"] * kw for row in curve], "o-", color="tab:red", label="peak, capped where needed")
    top.plot(xs, [row["mean_w"] * kw for row in curve], "s:", color="tab:orange", label="mean")
    top.axhline(study["power_budget_w"] * kw, color="black", lw=1.0, label="budget (base x nameplate)")
    for row in curve:
        if row["power_cap_w"] is not None:
            top.annotate(f"cap {row['power_cap_w']:.0f} W", (row["servers"], row["peak_w"] * kw),
                         textcoords="offset points", xytext=(4, -12), fontsize=8)
    top.set_ylabel("cluster power at the wall (kW)")
    top.legend(fontsize=8, loc="upper left")
    bottom.plot(xs, [row["ttft_p99_s"] / study["ttft_slo_s"] for row in curve], "o-", label="p99 TTFT / objective")
    bottom.plot(xs, [(row["tpot_p99_s"] or 0.0) / study["tpot_slo_s"] for row in curve], "s-",
                label="p99 TPOT / objective")
    bottom.axhline(1.0, color="black", lw=1.0)
    bottom.set_ylabel("p99 latency / objective")
    bottom.set_xlabel(f"servers (base {base})")
    bottom.set_xticks(xs)
    bottom.legend(fontsize=8, loc="upper left")
    best = study["max_servers"]
    if best is not None:
        for ax in (top, bottom):
            ax.axvline(best, color="tab:green", ls="--", lw=1.0)
        top.set_title(title or f"{best} servers fit the budget of {base}: {study['extra_servers']:+.0%}")
    elif title:
        top.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
