"""Optimisers: the fastest training plan for a job, and a serving deployment that meets its SLOs.

Both search like a mapper searches mappings (Timeloop's split of model and mapper): the cost
model evaluates, and the search lays out candidates. A training plan's whole space (tensor,
pipeline and data parallelism, micro-batch, ZeRO stage, recomputation, schedule, virtual
stages) is one vectorised sweep; serving candidates are screened with the closed-form estimate
and only the few that pass are simulated request by request with :func:`perfsim.serve`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfsim.errors import InputError, check_positive, check_whole
from perfsim.specs.hardware import split_whatif
from perfsim.specs.model import load_model

TRAIN_PLAN = ("tp", "pp", "dp", "micro_batch", "zero", "recompute", "schedule", "virtual_stages")
TRAIN_REPORT = ("step_time_s", "tokens_per_s", "mfu", "bubble_fraction", "memory_per_device_gib.total",
                "memory_per_device_gib.capacity")


def _choices(value, default, field):
    values = default if value is None else (value if isinstance(value, (list, tuple)) else [value])
    if not values:
        raise InputError("an empty list leaves nothing to search", field=field)
    return list(values)


def _powers_of_two(limit):
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _system(model, hardware):
    spec, overrides = split_whatif(hardware)
    m = load_model(model).columns()
    per_node = int(overrides.get("devices_per_node", spec["devices_per_node"]))
    return m, per_node


def _tp_choices(m, per_node, num_devices):
    """Powers of two up to a node that divide the device count and the attention heads."""
    heads = int(m["heads"])
    return [t for t in _powers_of_two(min(per_node, num_devices)) if num_devices % t == 0 and heads % t == 0]


def training_space(model, hardware, num_devices, global_batch, *, tp=None, pp=None, micro_batch=None, zero=None,
                   recompute=None, schedule=None, virtual_stages=None) -> dict:
    """The sweep arguments of :func:`optimize_training`'s search (lists are axes; ``dp`` follows)."""
    num_devices = check_whole(num_devices, "num_devices")
    global_batch = check_whole(global_batch, "global_batch")
    m, per_node = _system(model, hardware)
    layers = int(m["layers"])
    tps = _choices(tp, _tp_choices(m, per_node, num_devices), "tp")
    pps = _choices(pp, [d for d in _divisors(layers) if num_devices % d == 0 and d <= num_devices], "pp")
    mbs = _choices(micro_batch, [b for b in (1, 2, 4, 8) if b <= global_batch], "micro_batch")
    return {"tp": tps, "pp": pps, "micro_batch": mbs, "zero": _choices(zero, [0, 1, 2, 3], "zero"),
            "recompute": _choices(recompute, ["none", "selective", "full"], "recompute"),
            "schedule": _choices(schedule, ["1f1b", "interleaved", "zero-bubble"], "schedule"),
            "virtual_stages": _choices(virtual_stages, [1, 2, 3, 4, 6, 8], "virtual_stages")}


def optimize_training(model, hardware, num_devices, global_batch, seq_len: int = 2048, *, tp=None, pp=None,
                      micro_batch=None, zero=None, recompute=None, schedule=None, virtual_stages=None,
                      memory_limit_gib=None, constraints=None, objective: str = "min:step_time_s", top: int = 5,
                      chunk_rows=None, backend: str = "local", scheduler=None, **fixed) -> pd.DataFrame:
    """The fastest feasible parallelism plans of a training job, from one vectorised sweep.

    Searches tensor parallelism (powers of two within a node that divide the heads), pipeline
    parallelism (divisors of the layers), data parallelism (what the devices leave:
    ``num_devices / (tp · pp)``), micro-batch, ZeRO stage, recomputation, pipeline schedule and
    virtual stages (interleaved only). Any of them may be given as a value or a list to narrow
    the search. Plans must fit device memory (and ``memory_limit_gib`` when given) and meet
    ``constraints``.

    Parameters
    ----------
    model, hardware, num_devices, global_batch, seq_len
        The job, as in :func:`perfsim.estimate` (``mode`` is ``train``).
    memory_limit_gib : float, optional
        Memory a plan may use per device (default: the device's capacity).
    objective : str
        ``min:COLUMN`` or ``max:COLUMN`` of the results (default ``min:step_time_s``).
    top : int
        Plans returned.
    **fixed
        Other estimate arguments held fixed (``dtype``, ``runtime``, ``sp``, ``cp``, ...).

    Returns
    -------
    pandas.DataFrame
        The ``top`` best plans, best first: the plan columns (``tp``, ``pp``, ``dp``,
        ``micro_batch``, ``zero``, ``recompute``, ``schedule``, ``virtual_stages``) and every
        result column. ``attrs["evaluated"]`` is the number of plans evaluated, ``attrs["feasible"]``
        how many could run.

    Examples
    --------
    >>> plans = optimize_training("llama2-7b", "a100-80gb", num_devices=8, global_batch=32, top=1)
    >>> int(plans["tp"].iloc[0] * plans["pp"].iloc[0] * plans["dp"].iloc[0])
    8
    """
    from perfsim.explore.pareto import best
    from perfsim.explore.run import sweep_frame as sweep

    for name in ("mode", "dp", "num_devices", "global_batch", "seq_len"):
        if name in fixed:
            raise InputError("is set by the optimiser" if name != "mode" else "is train here", field=name)
    axes = training_space(model, hardware, num_devices, global_batch, tp=tp, pp=pp, micro_batch=micro_batch,
                          zero=zero, recompute=recompute, schedule=schedule, virtual_stages=virtual_stages)
    # a schedule only means something with a pipeline, v only when interleaved: one row per real plan
    rules = ["schedule == 'interleaved' or virtual_stages == 1", "pp > 1 or schedule == '1f1b'"]
    if memory_limit_gib is not None:
        rules.append(f"memory_per_device_gib.total <= {check_positive(memory_limit_gib, 'memory_limit_gib')!r}")
    if constraints is not None:
        rules += [constraints] if isinstance(constraints, str) else list(constraints)
    df = sweep(model=model, hardware=hardware, mode="train", num_devices=num_devices, global_batch=global_batch,
               seq_len=seq_len, **axes, **fixed, constraints=rules, keep_infeasible=True, chunk_rows=chunk_rows,
               backend=backend, scheduler=scheduler)
    ok = df["meets_constraints"].to_numpy()
    plans = best(df[ok], objective, n=check_whole(top, "top"))
    plans = plans.drop(columns=["meets_constraints"]).reset_index(drop=True)
    plans.attrs.update(evaluated=len(df), feasible=int(ok.sum()))
    return plans


def _mean_length(value, field):
    if isinstance(value, dict):
        if "mean" not in value:
            raise InputError("a length distribution needs a mean here", field=field)
        return round(float(value["mean"]))
    return check_whole(value, field)


def optimize_serving(model, hardware, num_devices, arrival_rate, ttft_slo_s, tpot_slo_s, *, prompt_len=1024,
                     gen_len=256, tp=None, max_batch=None, disaggregate: bool = True, candidates: int = 6,
                     num_requests: int = 400, scheduler: str = "continuous", seed: int = 0,
                     **fixed) -> pd.DataFrame:
    """A serving deployment for a load: instances, TP, batch limit and prefill/decode split.

    Candidates (``tp`` within a node, instances = ``num_devices / tp``, ``max_batch``, and, with
    ``disaggregate``, prefill:decode splits of the devices) are screened with the closed-form
    estimate, one sweep for all of them: the prefill of one request must meet the TTFT objective,
    the decode step at the batch limit the TPOT objective, the batch must fit the KV cache, and
    the deployment's request rate must cover ``arrival_rate``. The ``candidates`` best screened
    ones (by their margin over the load) are then simulated with :func:`perfsim.serve` on
    ``num_requests`` Poisson arrivals.

    Returns
    -------
    pandas.DataFrame
        One row per simulated candidate, best first (highest goodput, then SLO attainment, then
        least energy per token): ``tp``, ``instances``, ``max_batch``, ``disaggregate``, the
        screening estimates (``est_ttft_s``, ``est_tpot_s``, ``est_capacity_rps``) and the
        simulated ``goodput_requests_per_s``, ``slo_attainment``, ``ttft_p90_s``, ``tpot_p90_s``,
        ``throughput_tokens_per_s``, ``energy_j_per_token``, ``feasible``, ``reason``.
        ``attrs["screened"]`` counts the candidates screened, ``attrs["passed"]`` those passing.
    """
    from perfsim.events.serving.scenario import run_scenario as serve
    from perfsim.explore.run import sweep_frame as sweep

    num_devices = check_whole(num_devices, "num_devices")
    rate = check_positive(arrival_rate, "arrival_rate")
    ttft_slo, tpot_slo = check_positive(ttft_slo_s, "ttft_slo_s"), check_positive(tpot_slo_s, "tpot_slo_s")
    prompt, gen = _mean_length(prompt_len, "prompt_len"), _mean_length(gen_len, "gen_len")
    m, per_node = _system(model, hardware)
    tps = _choices(tp, _tp_choices(m, per_node, num_devices), "tp")
    batches = _choices(max_batch, [8, 16, 32, 64, 128, 256], "max_batch")
    for name in ("dp", "batch", "mode", "num_devices"):
        if name in fixed:
            raise InputError("is set by the optimiser", field=name)
    # screening: per instance (dp = 1), a single request's prefill and the decode step at each batch
    est = sweep(model=model, hardware=hardware, tp=tps, batch=sorted({1, *batches}), prompt_len=prompt,
                gen_len=gen, **fixed)
    rows = []
    for t in tps:
        one = est[(est["tp"] == t) & (est["batch"] == 1)].iloc[0]
        instances = num_devices // t
        for b in batches:
            r = est[(est["tp"] == t) & (est["batch"] == b)].iloc[0]
            fits = bool(r["feasible"]) and r["max_concurrency"] >= b
            ttft, tpot = float(one["ttft_s"]), float(r["tpot_s"])
            # a request takes its prefill plus gen_len decode steps of a full batch
            per_instance = b / (float(r["ttft_s"]) + gen * tpot)
            splits = [None]
            if disaggregate and instances >= 2:
                splits += sorted({max(1, min(instances - 1, round(instances * f))) for f in (0.25, 0.5, 0.75)})
            for p in splits:
                if p is None:
                    capacity, label = instances * per_instance, None
                else:  # prefill pool: one request at a time per instance; decode pool: full batches
                    prefill_rps = p / ttft
                    decode_rps = (instances - p) * b / (gen * tpot)
                    capacity, label = min(prefill_rps, decode_rps), f"{p * t}:{(instances - p) * t}"
                ok = fits and ttft <= ttft_slo and tpot <= tpot_slo and capacity >= rate
                rows.append({"tp": t, "instances": instances, "max_batch": b, "disaggregate": label,
                             "est_ttft_s": ttft, "est_tpot_s": tpot, "est_capacity_rps": capacity,
                             "screen_ok": ok, "margin": min(ttft_slo / ttft, tpot_slo / tpot, capacity / rate)})
    screen = pd.DataFrame(rows)
    passed = screen[screen["screen_ok"]]
    pool = passed if len(passed) else screen[screen["est_ttft_s"].notna()]
    chosen = pool.sort_values("margin", ascending=False, kind="stable").head(check_whole(candidates, "candidates"))
    results = []
    for _, c in chosen.iterrows():
        scenario = dict(model=model, hardware=hardware, tp=int(c["tp"]), max_batch=int(c["max_batch"]),
                        arrival_rate=rate, num_requests=check_whole(num_requests, "num_requests"), prompt_len=prompt_len,
                        gen_len=gen_len, ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo, scheduler=scheduler, seed=seed,
                        **fixed)
        if not isinstance(c["disaggregate"], str):  # co-located prefill and decode
            scenario["dp"] = int(c["instances"])
        else:
            scenario["disaggregate"] = c["disaggregate"]
        r = serve(**scenario)
        results.append({**{k: c[k] for k in ("tp", "instances", "max_batch", "disaggregate", "est_ttft_s",
                                              "est_tpot_s", "est_capacity_rps", "screen_ok")},
                        "goodput_requests_per_s": r["goodput_requests_per_s"], "slo_attainment": r["slo_attainment"],
                        "ttft_p90_s": (r["ttft_s"] or {}).get("p90"), "tpot_p90_s": (r["tpot_s"] or {}).get("p90"),
                        "throughput_tokens_per_s": r["throughput_tokens_per_s"],
                        "energy_j_per_token": r["energy_j_per_token"], "feasible": r["feasible"],
                        "reason": r["reason"]})
    out = pd.DataFrame(results)
    if len(out):
        key = out[["goodput_requests_per_s", "slo_attainment"]].fillna(-1.0)
        out = out.assign(_g=key["goodput_requests_per_s"], _s=key["slo_attainment"],
                         _e=out["energy_j_per_token"].fillna(np.inf))
        out = out.sort_values(["_g", "_s", "_e"], ascending=[False, False, True], kind="stable")
        out = out.drop(columns=["_g", "_s", "_e"]).reset_index(drop=True)
    out.attrs.update(screened=len(screen), passed=int(screen["screen_ok"].sum()))
    return out
