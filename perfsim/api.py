"""The Python API: ``estimate``, ``sweep``, ``serve``, ``gemm``, ``collective``, ``memcpy``.

Each function takes keyword arguments named like the CLI options and returns plain data.
"""

from __future__ import annotations

import dataclasses
import math
import os
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np

from perfsim.analytical.evaluate import evaluate, evaluate_columns
from perfsim.cost.collectives import ALGORITHMS, OPS, bus_factor
from perfsim.cost.npu import device_gemm_efficiency
from perfsim.cost.pim import pim_time
from perfsim.cost.roofline import gemm_time
from perfsim.cost.tiers import tier_traffic, transfer_time
from perfsim.cost.topology import group_collective
from perfsim.errors import MAX_WHOLE, InputError, check_whole, finite, shown, unknown
from perfsim.events import pipeline
from perfsim.events.trace import check_path, write_chrome_trace
from perfsim.plan import recall
from perfsim.plan.arguments import ARGUMENTS, Schedule, check_mode_arguments
from perfsim.plan.columns import default_inference_code, engine_name, hardware_columns
from perfsim.plan.offload import AUTO_ARGUMENTS, is_auto
from perfsim.plan.resolved import device_dtype, resolved_plan
from perfsim.plan.rows import first_row, plain
from perfsim.specs.dtypes import DTYPE_BYTES, check_dtype
from perfsim.specs.hardware import split_whatif
from perfsim.specs.paths import count_lines, reading_once

if TYPE_CHECKING:  # pandas is imported by the sweep that returns a DataFrame, not by every estimate
    import pandas as pd

TIERS = ("hbm", "cpu", "nvme")


def _given(arguments: dict) -> dict:
    """The arguments given a value: None means an argument's default, as if it were left out."""
    return {name: value for name, value in arguments.items() if value is not None}


def _one_row(plan: dict, function: str):
    for name, value in plan.items():
        if isinstance(value, list) and name != "place" \
                and not (name == "pp_layers" and not any(isinstance(v, list) for v in value)):
            raise InputError(f"{function} takes one value per argument; use sweep for lists", field=name)
        if name == "hardware" and isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):
            raise InputError(f"{function} takes one value per what-if key; use sweep for lists", field=name)


@reading_once
def estimate(trace_out=None, **plan) -> dict:
    """Estimate one configuration (a one-row sweep).

    Parameters
    ----------
    trace_out : str or path, optional
        Training only: also simulate the step on a timeline (:func:`timeline`), write its
        Chrome trace (Perfetto) there and add a ``timeline`` key with the simulated step.
    **plan
        ``model``, ``hardware`` and the plan arguments of docs/reference.md (``mode``, ``dtype``, ``tp``,
        ``pp``, ``dp``, ``batch``, ``prompt_len``, ``gen_len``, ``seq_len``, ``global_batch``, …).
        Lists are not allowed here; use :func:`sweep`.

    Returns
    -------
    dict
        ``feasible``, ``reason``, ``memory_per_device_gib`` {…}, ``breakdown`` {…} and the
        mode's keys (inference: ``ttft_s``, ``tpot_s``, …; train: ``step_time_s``, ``mfu``, …).
        A new dict each call (a call with the same arguments as one of the last few, its spec files
        unchanged, nests the result arrays that call made: :mod:`perfsim.plan.recall`).

    Examples
    --------
    >>> r = estimate(model="llama2-7b", hardware="a100-80gb", batch=1, prompt_len=512, gen_len=64)
    >>> r["feasible"], r["tpot_s"] > 0
    (True, True)
    """
    plan = _given(plan)
    key = recall.key(plan) if trace_out is None else None  # (the last few calls' results: perfsim.plan.recall)
    kept = None if key is None else recall.recall(key, plan)
    if kept is not None:
        out, dtype = kept
    else:
        _one_row(plan, "estimate")
        if trace_out is None:
            grid, out = evaluate(plan)
            dtype = grid.values("dtype")[0]  # (the default that the devices take, where none is given)
        else:
            if plan.get("mode", "inference") != "train":
                raise InputError("a step trace is written for mode train (serve writes serving traces)",
                                 field="trace_out")
            check_path(trace_out)
            c, out = evaluate_columns(plan)
            dtype = None
    check_mode_arguments(plan)  # after the values' own checks: a bad value is named as such first
    if key is not None and kept is None:
        recall.keep(key, plan, (out, dtype))  # (the arrays the result is nested from: read, never changed)
    result = first_row(out)
    result["mode"] = plan.get("mode", "inference")
    result["plan"] = resolved_plan(plan, out, dtype)
    if trace_out is not None:
        step = _timeline(c, result, "ends", trace_out, _cap_stretch(out),
                         plan.get("pp_layers"))
        result["timeline"] = {k: step[k] for k in ("simulated", "step_time_s", "bubble_fraction", "breakdown",
                                                   "trace_out")}
    return result


@reading_once
def timeline(trace_out=None, stages: str = "ends", **plan) -> dict:
    """Simulate one training step on a timeline of tasks (a discrete-event run).

    The durations are the closed form's (:func:`perfsim.analytical.training.stage_times`); the
    schedule (:mod:`perfsim.events.pipeline`) decides when each pass, hand-off, gradient bucket
    and optimizer step runs. Unlike the closed form, which charges every stage with the busiest
    one, the embedding runs on the first stage and the LM head on the last.

    Parameters
    ----------
    trace_out : str or path, optional
        Write the step as a Chrome trace (open it in Perfetto, ui.perfetto.dev): one process per
        pipeline stage, one track per stream and outgoing link, one slice per task.
    stages : {"ends", "uniform"}
        ``uniform`` spreads the embedding and LM head evenly over the stages.
    **plan
        The arguments of :func:`estimate` for one training configuration (``mode`` defaults to
        ``train``).

    Returns
    -------
    dict
        ``feasible``, ``reason``, ``schedule``, ``simulated`` (False for ``dualpipe``, which only the
        closed form prices: its number is then the closed form's), ``step_time_s``,
        ``closed_form_step_time_s``, ``bubble_fraction``, ``per_stage`` (busy seconds of each
        stage's compute stream), ``breakdown`` (``compute_s``, ``p2p_exposed_s``, ``dp_exposed_s``,
        ``optimizer_s``, ``overhead_s``, ``idle_s``, summing to the step; see
        :func:`perfsim.events.pipeline.simulate`) and ``trace_out`` (the path, when written). An
        infeasible plan is not simulated: ``feasible`` is False with the ``reason``.

    Examples
    --------
    >>> r = timeline(model="llama2-7b", hardware="a100-80gb", tp=2, pp=4, global_batch=16)
    >>> r["simulated"], r["step_time_s"] <= r["closed_form_step_time_s"]
    (True, True)
    """
    plan = _given(plan)
    _one_row(plan, "timeline")
    if plan.setdefault("mode", "train") != "train":
        raise InputError("a timeline simulates a training step; mode must be train", field="mode",
                         value=plan["mode"])
    stages = "ends" if stages is None else stages
    if stages not in pipeline.STAGE_COSTS:
        raise unknown("stage costs", stages, pipeline.STAGE_COSTS, field="stages")
    if trace_out is not None:
        check_path(trace_out)
    c, out = evaluate_columns(plan)
    closed = {k: plain(out[k][0]) for k in ("feasible", "reason", "step_time_s")}
    return _timeline(c, closed, stages, trace_out, _cap_stretch(out), plan.get("pp_layers"))


def _cap_stretch(out) -> float:
    """Factor by which ``power_cap_w`` lengthens the passes of a one-row training result.

    The closed form adds ``throttle_s`` to a step whose micro-batch passes and bubble run at the
    capped clock (:func:`perfsim.analytical.training._step_span`); spread over those passes, every
    forward, backward and recompute takes this factor longer, while data-parallel traffic, the
    optimizer step and hand-offs keep their time. 1 without a cap.
    """
    throttle = out.get("breakdown.train.throttle_s")
    if throttle is None:
        return 1.0
    busy = sum(float(out[f"breakdown.train.{k}"][0]) for k in ("forward_s", "backward_s", "recompute_s", "bubble_s"))
    added = float(throttle[0])
    return 1.0 + added / busy if busy > 0 and np.isfinite(added) else 1.0


def _timeline(c, closed: dict, stages: str, trace_out, stretch: float = 1.0, pp_layers=None) -> dict:
    """The timeline of a one-row column set ``c`` whose closed-form results are ``closed``; a power
    cap stretches every pass by ``stretch`` (:func:`_cap_stretch`); ``pp_layers`` the layers per stage
    (default: balanced)."""
    schedule = Schedule(int(c["schedule"])).label
    result = {"feasible": closed["feasible"], "reason": closed["reason"], "schedule": schedule, "simulated": False,
              "step_time_s": None, "closed_form_step_time_s": closed["step_time_s"], "bubble_fraction": None,
              "per_stage": None, "breakdown": None, "trace_out": None}
    if not closed["feasible"]:
        return result
    if schedule not in pipeline.SIMULATED:
        result["step_time_s"] = closed["step_time_s"]
        return result
    costs, n_micro, overhead = pipeline.stage_costs(c, stages, pp_layers)
    if stretch != 1.0:
        costs = dataclasses.replace(costs, **{k: getattr(costs, k) * stretch
                                              for k in ("forward_s", "backward_s", "wgrad_s", "recompute_s")})
    step = pipeline.simulate(costs, schedule, n_micro, overhead)
    result.update(simulated=True, step_time_s=step["step_time_s"], bubble_fraction=step["bubble_fraction"],
                  per_stage=step["per_stage_s"], breakdown=step["breakdown"])
    if trace_out is not None:
        slices = step["schedule"].slices()
        for piece, kind in zip(slices, step["kind"], strict=True):
            piece["cat"] = kind
        result["trace_out"] = write_chrome_trace(trace_out, slices)
    return result


@reading_once
def sweep(chunk_rows=None, backend: str = "local", scheduler=None, constraints=None, keep_infeasible: bool = False,
          progress: bool = False, max_rows=None, **axes) -> pd.DataFrame:
    """Evaluate the cartesian product of list-valued arguments in one vectorised pass.

    Parameters
    ----------
    chunk_rows : int, optional
        Evaluate the rows in chunks of this many (memory per chunk; the unit of work of a
        backend). Default: up to 131,072 rows locally (whole boxes of the evaluation), a few chunks per
        worker on dask. Results do not depend on it.
    backend : {"local", "dask"}
        ``dask`` spreads the chunks over a dask cluster (``pip install perfsim[dask]``).
    scheduler : str or distributed.Client, optional
        The dask scheduler's address (``tcp://host:8786``) or a client; default: a
        ``LocalCluster`` on this machine for the call.
    constraints : str or list of str, optional
        Expressions over result columns (``"ttft_s < 0.5"``, see
        :mod:`perfsim.explore.constraints`); rows that are infeasible or break one are dropped ...
    keep_infeasible : bool
        ... or, with this, kept and flagged by a ``meets_constraints`` column.
    progress : bool
        Report progress on stderr.
    max_rows : int, optional
        Refuse a sweep of more rows than this (default 50 million), counted before any work; a
        sweep whose table would not fit this machine's memory is refused too (write it to a file
        with :func:`perfsim.explore.files.write_sweep` or ``perfsim sweep``).
    **axes
        The arguments of :func:`estimate`, any of them a list.

    Returns
    -------
    pandas.DataFrame
        Input columns (each swept argument, what-if keys as ``hardware.KEY``), then output columns
        (nested keys flattened with ``.``), then the row's resolved plan, ``plan.NAME`` for every
        argument as :func:`estimate`'s ``plan`` gives it (:mod:`perfsim.explore.plan_columns`);
        infeasible rows are kept with ``feasible=False`` unless constraints are given.

    Examples
    --------
    >>> df = sweep(model="llama2-7b", hardware="a100-80gb", batch=[1, 8], prompt_len=512, gen_len=64)
    >>> len(df), bool(df["tpot_s"].is_monotonic_increasing)
    (2, True)
    """
    from perfsim.explore.run import sweep_frame

    return sweep_frame(chunk_rows=chunk_rows, backend=backend, scheduler=scheduler, constraints=constraints,
                       keep_infeasible=keep_infeasible, progress=progress, max_rows=max_rows, **axes)


#: requests a serving simulation may have unless told otherwise (``max_requests``): a million take
#: about half a minute
MAX_REQUESTS = 1_000_000
#: sequences an instance may batch: the iteration cost table has a row for each (13 kB), far above
#: what serving engines run (vLLM's default is 256)
MAX_BATCH = 1 << 16
#: power windows a run may span (arrays of this many window means: 80 MB each)
MAX_WINDOWS = 10_000_000
MIN_WINDOW_S = 1e-3


def serve(max_requests=None, **scenario) -> dict:
    """Simulate serving a stream of requests on a deployment, iteration by iteration.

    Parameters
    ----------
    **scenario
        The deployment as in :func:`estimate` (``model``, ``hardware``, ``tp``, ``pp``, ``dp``,
        ``dtype``, ``runtime``, ``gpu_memory_utilization``, …) and the load: ``arrival_rate``
        (requests/s, Poisson) or ``trace`` (CSV ``arrival_s,prompt_len,gen_len``) or neither (all
        requests at time 0), ``num_requests`` (default 1000, or the trace's rows), ``prompt_len``
        / ``gen_len`` (whole numbers, distributions such as ``{"dist": "lognormal", "mean": 1024,
        "sigma": 0.5, "max": 4096}``, or a CSV of lengths), ``scheduler`` (``static``,
        ``continuous``, ``chunked-prefill``; default continuous), ``max_batch`` (sequences per
        instance; default the engine profile's ``max_num_seqs``, else 256), ``max_batched_tokens``
        (tokens per iteration: a continuous prefill iteration's prompt tokens and a chunked-prefill
        iteration's tokens; default the engine profile's ``max_num_batched_tokens``),
        ``chunk_size`` (tokens per chunked-prefill iteration; default ``max_batched_tokens``, else
        512), ``max_prefill_tokens`` (prompt tokens per continuous prefill iteration; default
        ``max_batched_tokens``, else 8192),
        ``disaggregate`` (``"P:D"`` devices), ``ttft_slo_s``, ``tpot_slo_s``, ``seed`` (default 0),
        ``trace_out`` (Chrome trace JSON path), ``power_cap_w`` (per device: each iteration's clock
        is lowered to meet it), ``power_trace`` (add the power over time per instance and cluster),
        ``power_window_s`` (window of the cluster power statistics, default 1 s).
    max_requests : int, optional
        Refuse more requests than this (default 1,000,000): ``num_requests`` and the rows of a
        ``trace`` or of a length CSV are counted before any work.

    Returns
    -------
    dict
        ``ttft_s``, ``tpot_s``, ``itl_s``, ``e2e_latency_s`` (each ``{mean, p50, p90, p99}``),
        ``throughput_tokens_per_s``, ``requests_per_s``, ``goodput_requests_per_s``,
        ``slo_attainment``, ``power_w_per_device``, ``power_w_per_node``, ``energy_j``,
        ``energy_wall_j``, ``energy_j_per_token``, ``completed``, ``dropped``,
        ``optimal_throughput_tokens_per_s``, ``feasible``, ``reason`` and ``breakdown``.

    Examples
    --------
    >>> r = serve(model="llama2-7b", hardware="a100-80gb", num_requests=50, prompt_len=256, gen_len=32,
    ...           arrival_rate=5.0)
    >>> r["completed"], r["ttft_s"]["p50"] < r["e2e_latency_s"]["p50"]
    (50, True)
    """
    from perfsim.events.serving.scenario import run_scenario

    scenario = _given(scenario)
    for name in ("prompt_len", "gen_len"):
        _finite_numbers(scenario.get(name), name)
    limit = MAX_REQUESTS if max_requests is None else check_whole(max_requests, "max_requests")
    sizes = {"num_requests": (finite(scenario.get("num_requests")) or 0, "requests")}  # checked in full later
    for name in ("trace", "prompt_len", "gen_len"):  # files, counted without being read (a FIFO is refused)
        if isinstance(scenario.get(name), (str, os.PathLike)):
            sizes[name] = (count_lines(scenario[name], name) - 1, "rows or more")  # less a header, if any
    _check_span(scenario)
    for name in AUTO_ARGUMENTS:  # a searched placement is an estimate's: a simulation runs one placement
        if is_auto(scenario.get(name)):
            raise InputError("auto is searched by estimate and sweep; serve takes none, a tier or fractions "
                             "(estimate's plan gives the one it chose)", field=name)
    if (finite(scenario.get("max_batch")) or 0) > MAX_BATCH:
        raise InputError(f"at most {MAX_BATCH:,} sequences per instance, got {shown(scenario['max_batch'])}",
                         field="max_batch")
    for name, (n, what) in sizes.items():
        if n > limit:
            raise InputError(f"{n:,.0f} {what}, above the limit of {limit:,} requests; pass max_requests="
                             f"{n:.0f} (--max-requests {n:.0f}) to simulate them", field=name)
    result = run_scenario(**scenario)
    result["plan"] = _serve_plan(scenario)
    for key in ("max_batch", "max_batched_tokens", "max_prefill_tokens", "chunk_size"):  # as the run resolved them
        result["plan"][key] = result.get("breakdown", {}).get(key, result["plan"][key])
    return result


def _serve_plan(scenario: dict) -> dict:
    """The deployment and load as the simulation took them: each argument given, else its default."""
    from perfsim.events.serving.checks import _NOT_FOR_SERVE, DEFAULT_REQUESTS, SERVE_ARGUMENTS

    defaults = {name: default for name, (_, default) in ARGUMENTS.items()
                if name not in _NOT_FOR_SERVE and name != "mode"} | SERVE_ARGUMENTS
    plan = {name: default if scenario.get(name) is None else scenario[name] for name, default in defaults.items()}
    if plan["num_requests"] is None and plan["trace"] is None:
        plan["num_requests"] = DEFAULT_REQUESTS
    plan["dtype"] = plan["dtype"] or device_dtype(plan["hardware"])
    plan["runtime"] = plan["runtime"] or engine_name(
        "inference", None, default_inference_code(split_whatif(plan["hardware"])[0]))
    group = plan["tp"] * plan["pp"] * plan["cp"]
    if plan["dp"] is None:
        plan["dp"] = max(int(plan["num_devices"] // group), 1) if plan["num_devices"] else 1
    plan["num_devices"] = plan["num_devices"] or group * plan["dp"]
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.items()}


def _check_span(scenario: dict):
    """Refuse Poisson arrivals so sparse that the run spans more power windows than :data:`MAX_WINDOWS`,
    and windows shorter than :data:`MIN_WINDOW_S`."""
    rate, window = finite(scenario.get("arrival_rate")), finite(scenario.get("power_window_s", 1.0))
    n = finite(scenario.get("num_requests", 1000))
    if window is not None and 0 < window < MIN_WINDOW_S:
        raise InputError(f"must be at least {MIN_WINDOW_S:g} s, got {window:g}", field="power_window_s")
    if rate and window and n and rate > 0 and window > 0 and n / rate / window > MAX_WINDOWS:
        raise InputError(f"{n:,.0f} requests at {rate:g}/s span about {n / rate:,.3g} s, more than {MAX_WINDOWS:,} "
                         f"power windows of {window:g} s; raise arrival_rate or power_window_s", field="arrival_rate")


def _finite_numbers(value, field: str):
    """Refuse NaN, infinities and numbers beyond 2**53 in ``value`` or the values of a mapping."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _finite_numbers(sub, f"{field}.{key if isinstance(key, str) else shown(key)}")
    elif isinstance(value, Real) and not isinstance(value, bool):
        number = finite(value)
        if number is None:
            raise InputError(f"expected a finite number, got {shown(value)}", field=field)
        if abs(number) > MAX_WHOLE:
            raise InputError(f"must be at most 2**53 ({MAX_WHOLE:,}), got {shown(value)}", field=field)


def gemm(hardware, m, n, k, dtype: str = "bf16") -> dict:
    """Time of one ``[m × k] · [k × n]`` GEMM: ``{time_s, tflops}`` (dense FLOPs = 2mnk).

    GPUs: tile and wave quantisation over the SMs; NPUs and TPUs: systolic arrays
    (:mod:`perfsim.cost.npu`); a PIM device: ``m`` GEMVs over the ``k × n`` operand held in its
    banks (:mod:`perfsim.cost.pim`). A what-if ``hardware`` dict (``hbm_bandwidth_gb_s``,
    ``peak_tflops``, …) applies as in :func:`estimate`.
    """
    spec, overrides = split_whatif(hardware)
    dtype = check_dtype("bf16" if dtype is None else dtype)
    m, n, k = (check_whole(v, name) for name, v in (("m", m), ("n", n), ("k", k)))
    c = hardware_columns(spec, overrides, dtype)
    if math.isnan(c["peak_flops"]):
        raise InputError(f"{spec.name} has no {dtype} tensor rate", field="dtype", value=dtype,
                         choices=list(spec.peak_tflops))
    act = DTYPE_BYTES[dtype]
    flops = 2.0 * m * n * k
    if c["pim_device"] > 0:  # the k x n operand in the banks, one GEMV per row of the m x k one
        t = pim_time(flops, n * k * act, pim_flops=c["pim_flops"], pim_bw=c["pim_bw"], pim_eff=c["pim_eff"],
                     launch_s=c["device_launch_s"])
    else:
        eff = device_gemm_efficiency(c, m, n, k, 1.0, c["gemm_max"])
        t, _, _ = gemm_time(m, n, k, peak_flops=c["peak_flops"], eff=eff, bandwidth=c["hbm_bw"],
                            memory_eff=c["memory_max"], a_bytes=act, w_bytes=act, out_bytes=max(act, 2.0),
                            launch_s=c["device_launch_s"], stream_s=c["gemm_stream_s"])
    t = float(t)
    return {"time_s": t, "tflops": flops / t / 1e12}


def _hw_columns(hardware):
    spec, overrides = split_whatif(hardware)
    return spec, overrides, hardware_columns(spec, overrides)


def collective(hardware, op: str, size_bytes, num_devices, algorithm: str = "auto") -> dict:
    """One collective over ``num_devices`` devices placed node by node.

    Returns ``{time_s, algbw_gb_s, busbw_gb_s}`` with nccl-tests definitions (GB = 1e9 B).
    """
    if op not in OPS:
        raise unknown("collective op", op, OPS, field="op")
    algorithm = "auto" if algorithm is None else algorithm
    if algorithm not in ALGORITHMS:
        raise unknown("algorithm", algorithm, ALGORITHMS, field="algorithm")
    size_bytes, num_devices = check_whole(size_bytes, "size_bytes"), check_whole(num_devices, "num_devices")
    if num_devices < 2:
        raise InputError("a collective needs at least 2 devices", field="num_devices")
    _, _, c = _hw_columns(hardware)
    c = dict(c, num_devices=float(num_devices))  # the run is the group (on a torus: a slice of its devices)
    t = float(group_collective(c, op, float(size_bytes), float(num_devices), algorithm=algorithm))
    algbw = size_bytes / t / 1e9
    return {"time_s": t, "algbw_gb_s": algbw, "busbw_gb_s": algbw * float(bus_factor(op, num_devices))}


def memcpy(hardware, size_bytes, src: str, dst: str) -> dict:
    """Copy ``size_bytes`` between memory tiers: ``{time_s, bandwidth_gb_s}``.

    ``bandwidth_gb_s`` counts bytes read plus bytes written for a copy inside one tier (hbm → hbm,
    as STREAM does; cpu → cpu; nvme → nvme) and bytes moved for a transfer between tiers. Paths
    between tiers are priced by :func:`perfsim.cost.tiers.transfer_time`, the formula the
    offloading models use: the host link per direction, the node's NVMe (reads and writes), and
    host memory (NVMe data bounces through it unless the node has a direct path).
    """
    for name, tier in (("src", src), ("dst", dst)):
        if tier not in TIERS:
            raise unknown("memory tier", tier, TIERS, field=name)
    size_bytes = check_whole(size_bytes, "size_bytes")
    spec, _, c = _hw_columns(hardware)
    launch = spec["kernel_launch_us"] * 1e-6
    size = float(size_bytes)
    if src == dst == "hbm":
        moved = 2.0 * size
        t = moved / (c["hbm_bw"] * spec["memory_max"])
    else:
        paths = {
            ("cpu", "hbm"): tier_traffic(c, load_cpu=size), ("hbm", "cpu"): tier_traffic(c, store_cpu=size),
            ("nvme", "hbm"): tier_traffic(c, load_nvme=size), ("hbm", "nvme"): tier_traffic(c, store_nvme=size),
            ("nvme", "cpu"): dict(nvme_read=size, host=size), ("cpu", "nvme"): dict(nvme_write=size, host=size),
            ("cpu", "cpu"): dict(host=2.0 * size), ("nvme", "nvme"): dict(nvme_read=size, nvme_write=size),
        }
        moved = 2.0 * size if src == dst else size
        t = float(transfer_time(c, sharing=1.0, **paths[(src, dst)]))
        if src == dst == "cpu" and not c["cpu_bw"] > 0:
            t = math.inf
    if not (math.isfinite(t) and t > 0):
        raise InputError(f"{spec.name} has no bandwidth for {src} -> {dst} in its spec", field="hardware")
    t += launch
    return {"time_s": t, "bandwidth_gb_s": moved / t / 1e9}


__all__ = ["ARGUMENTS", "collective", "estimate", "gemm", "memcpy", "serve", "sweep", "timeline"]
