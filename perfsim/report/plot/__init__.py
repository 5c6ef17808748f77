"""Plots of estimates, sweeps and timelines (matplotlib).

Every function returns a :class:`matplotlib.figure.Figure` drawn without pyplot (so it works under
any backend, Agg included, and in notebooks) and, with ``out=``, also writes it to that file
(PNG, SVG or PDF by its suffix).

* :func:`roofline` — the device's roofline with a plan's ops placed on it;
* :func:`memory_stack` — memory per device by kind (weights, gradients, optimizer, activations,
  KV cache, other) against capacity, for one or several plans;
* :func:`time_breakdown` — where the time of a step or request goes;
* :func:`pareto` — a sweep's points and their Pareto front;
* :func:`timeline` — a pipeline or serving timeline from a Chrome trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from perfsim.errors import InputError
from perfsim.specs.paths import read_text

KINDS = ("roofline", "memory", "breakdown", "pareto", "timeline")
_MEMORY = ("weights", "gradients", "optimizer", "activations", "kv_cache", "other")
_COLORS = {"gemm": "tab:blue", "attention": "tab:orange", "elementwise": "tab:green", "communication": "tab:red"}


def _finish(fig: Figure, out):
    fig.tight_layout()
    if out is not None:
        path = Path(out)
        if not path.parent.is_dir():
            raise InputError(f"directory {path.parent} does not exist", field="out")
        fig.savefig(path, dpi=120)
    return fig


def roofline(hardware, *, dtype: str = "bf16", ops=None, out=None, **plan) -> Figure:
    """The roofline of ``hardware`` (peak rate of ``dtype``, HBM bandwidth) with ops placed on it.

    Parameters
    ----------
    hardware
        Zoo name, YAML path or what-if dict, as in :func:`perfsim.estimate`.
    ops : pandas.DataFrame or list of dict, optional
        Points to place: ``flops`` and ``bytes`` (and ``time_s``, ``op``, ``phase``), e.g. from
        :func:`perfsim.report.plot.ops.op_points`. Default: the ops of ``plan`` when it names a model.
    **plan
        A one-row plan (``model``, ``tp``, ``batch``, ...): its ops of one layer are placed at
        their arithmetic intensity and attained rate (prefill and decode, or a training forward).
    """
    from perfsim.report.plot.ops import op_points
    from perfsim.specs.dtypes import check_dtype
    from perfsim.specs.hardware import split_whatif

    spec, overrides = split_whatif(hardware)
    check_dtype(dtype)
    if "model" in plan and ops is None:
        ops = op_points(hardware=hardware, dtype=dtype, **plan)
    peak = overrides.get("peak_tflops", spec.peak(dtype)) * 1e12
    if not np.isfinite(peak):
        raise InputError(f"{spec.name} has no {dtype} tensor rate", field="dtype", value=dtype,
                         choices=list(spec.peak_tflops))
    bw = overrides.get("hbm_bandwidth_gb_s", spec["hbm_bandwidth_gb_s"]) * 1e9
    ridge = peak / bw
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    x = np.logspace(np.log10(ridge) - 4, np.log10(ridge) + 3, 200)
    ax.loglog(x, np.minimum(peak, bw * x) / 1e12, color="black", lw=1.5,
              label=f"{spec.name}: {peak / 1e12:,.0f} TFLOP/s {dtype}, {bw / 1e9:,.0f} GB/s")
    ax.axvline(ridge, color="grey", ls=":", lw=1)
    if ops is not None:
        df = pd.DataFrame(ops)
        for col in ("flops", "bytes"):
            if col not in df.columns:
                raise InputError(f"ops need a {col!r} column", field="ops")
        df = df[(df["flops"] > 0) & (df["bytes"] > 0)]
        intensity = df["flops"] / df["bytes"]
        rate = df["flops"] / df["time_s"] if "time_s" in df.columns else np.minimum(peak, bw * intensity)
        phases = list(dict.fromkeys(df["phase"])) if "phase" in df.columns else [None]
        markers = dict(zip(phases, "o^sDv", strict=False))
        for phase in phases:
            sel = (df["phase"] == phase) if phase is not None else np.ones(len(df), dtype=bool)
            kinds = df.loc[sel, "kind"] if "kind" in df.columns else pd.Series("gemm", index=df.index[sel])
            ax.scatter(intensity[sel], rate[sel] / 1e12, marker=markers.get(phase, "o"),
                       c=[_COLORS.get(k, "tab:purple") for k in kinds], edgecolors="black", lw=0.5, zorder=3,
                       label=phase)
    ax.set_xlabel("arithmetic intensity (FLOP / byte of device memory)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("roofline" + (f": {plan['model']}" if isinstance(plan.get("model"), str) else ""))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    if ops is not None and "op" in df.columns and len(df):
        fig.tight_layout()  # the labels are placed on the final axes
        _op_labels(ax, intensity.to_numpy(), (rate / 1e12).to_numpy(), df)
    return _finish(fig, out)


def _op_labels(ax, x, y, df):
    """One label per group of ops drawn at (nearly) the same point, placed clear of the others
    (:mod:`perfsim.report.plot.labels`): ``mlp_up, mlp_down (decode)``, phases named where the plot has several."""
    from perfsim.report.plot.labels import groups, place_labels

    xy = ax.transData.transform(np.column_stack([x, y]))
    phased = "phase" in df.columns and df["phase"].nunique() > 1
    names, gx, gy = [], [], []
    for members in groups(xy):
        by_phase: dict = {}
        for i in members:
            by_phase.setdefault(df["phase"].iloc[i] if phased else None, []).append(str(df["op"].iloc[i]))
        parts = []
        for phase, ops in by_phase.items():
            ops = list(dict.fromkeys(ops))
            lines = [", ".join(ops[k:k + 3]) for k in range(0, len(ops), 3)]
            parts.append("\n".join(lines) + (f" ({phase})" if phase is not None else ""))
        names.append("\n".join(parts))
        gx.append(float(np.exp(np.mean(np.log(x[members])))))
        gy.append(float(np.exp(np.mean(np.log(y[members])))))
    place_labels(ax, gx, gy, names, markers=np.column_stack([x, y]), avoid=[ax.get_legend()])


def _results(result):
    """One estimate result, a list of them, or a sweep's rows → ``[(label, flat dict)]``."""
    if isinstance(result, pd.DataFrame):
        return [(str(i), row.to_dict()) for i, row in result.iterrows()]
    if isinstance(result, dict) and "memory_per_device_gib" not in result and "breakdown" not in result:
        return [(str(k), _flat(v)) for k, v in result.items()]  # {label: result}
    if isinstance(result, dict):
        return [("", _flat(result))]
    if isinstance(result, (list, tuple)):
        return [(str(i), _flat(r)) for i, r in enumerate(result)]
    raise InputError("expected an estimate result (dict), a list of them or a sweep's DataFrame", field="result")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def memory_stack(result, *, out=None) -> Figure:
    """Memory per device by kind, stacked, against the device's capacity.

    ``result`` is an estimate result, a list or ``{label: result}`` dict of them, or rows of a sweep.
    """
    rows = _results(result)
    fig = Figure(figsize=(max(4.0, 1.2 * len(rows) + 2.5), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for kind in _MEMORY:
        values = np.array([float(r.get(f"memory_per_device_gib.{kind}") or 0.0) for _, r in rows])
        if np.any(values > 0):
            ax.bar(x, values, 0.6, bottom=bottom, label=kind.replace("_", " "))
            bottom += values
    caps = np.array([float(r.get("memory_per_device_gib.capacity") or np.nan) for _, r in rows])
    for i, cap in enumerate(caps):
        if np.isfinite(cap):
            ax.hlines(cap, i - 0.4, i + 0.4, color="black", ls="--", lw=1.2, label="capacity" if i == 0 else None)
    ax.set_xticks(x, [label for label, _ in rows], rotation=30 if len(rows) > 4 else 0)
    ax.set_ylabel("GiB per device")
    ax.set_title("memory per device")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(fig, out)


def time_breakdown(result, *, out=None) -> Figure:
    """Where the time goes: a training step's parts, or a request's prefill and decode step by op kind."""
    rows = _results(result)
    _, first = rows[0]
    train = any(k.startswith("breakdown.train.") for k in first)
    if train:
        # only the parts that add up to the step are stacked; communication inside the forward and
        # backward (TP, EP) or hidden behind them (DP, CP) is already in those bars
        keys = ("forward_s", "backward_s", "recompute_s", "bubble_s", "pipeline_p2p_s", "dp_exposed_s",
                "cp_exposed_s", "optimizer_s", "offload_s", "overhead_s", "throttle_s")
        bars = [(label, {k[:-2]: float(r.get(f"breakdown.train.{k}") or 0.0) for k in keys}) for label, r in rows]
        unit = "s per step"
    else:
        keys = ("gemm_s", "attention_s", "elementwise_s", "communication_s", "pipeline_s", "overhead_s", "offload_s",
                "host_attention_s", "throttle_s")
        bars = []
        for label, r in rows:
            for phase in ("prefill", "decode"):
                bars.append((f"{label} {phase}".strip(),
                             {k[:-2]: float(r.get(f"breakdown.{phase}.{k}") or 0.0) for k in keys}))
        unit = "s (prefill of the batch; one decode step)"
    fig = Figure(figsize=(7, max(2.5, 0.45 * len(bars) + 1.5)))
    ax = fig.add_subplot()
    y = np.arange(len(bars))
    left = np.zeros(len(bars))
    parts = [k for k in bars[0][1] if any(b[1][k] > 0 for b in bars)]
    for part in parts:
        values = np.array([b[1][part] for b in bars])
        ax.barh(y, values, 0.6, left=left, label=part.replace("_", " "))
        left += values
    ax.set_yticks(y, [b[0] for b in bars])
    ax.invert_yaxis()
    if not train and len(bars) >= 2:
        ax.set_xscale("log") if left.max() / max(left[left > 0].min(), 1e-30) > 100 else None
    ax.set_xlabel(unit)
    ax.set_title("time breakdown" + (" (the stacked parts sum to the step)" if train else ""))
    ax.legend(fontsize=7, loc="lower right")
    return _finish(fig, out)


def _axis(spec, default_sense):
    if ":" in spec:
        from perfsim.explore.pareto import parse_objective

        column, minimise = parse_objective(spec)
        return column, minimise
    return spec, default_sense == "min"


def pareto(df: pd.DataFrame, x: str, y: str, *, color=None, constraints=None, out=None) -> Figure:
    """A sweep's feasible points and their Pareto front.

    ``x`` and ``y`` are result columns, optionally prefixed ``min:`` or ``max:`` (default:
    minimise ``x``, maximise ``y``, e.g. ``x="tpot_s", y="throughput_tokens_per_s"``). ``color``
    names a column to colour the points by.
    """
    from perfsim.explore.pareto import pareto as front

    xcol, xmin = _axis(x, "min")
    ycol, ymin = _axis(y, "max")
    objectives = {"minimize": [c for c, m in ((xcol, xmin), (ycol, ymin)) if m],
                  "maximize": [c for c, m in ((xcol, xmin), (ycol, ymin)) if not m]}
    best = front(df, constraints=constraints, **objectives)
    ok = df["feasible"].to_numpy(dtype=bool) if "feasible" in df.columns else np.ones(len(df), dtype=bool)
    pts = df[ok]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if color is not None:
        if color not in df.columns:
            raise InputError(f"unknown column {color!r}", field="color")
        labels = pts[color].astype(str)
        for value in dict.fromkeys(labels):
            sel = (labels == value).to_numpy()
            ax.scatter(pts[xcol][sel], pts[ycol][sel], s=8, alpha=0.5, label=f"{color}={value}")
    else:
        ax.scatter(pts[xcol], pts[ycol], s=8, alpha=0.4, color="tab:grey", label="feasible")
    line = best.sort_values(xcol)
    ax.plot(line[xcol], line[ycol], "o-", color="tab:red", ms=4, lw=1.5, label=f"Pareto front ({len(best)})")
    positive = (pts[xcol] > 0).all() and (pts[ycol] > 0).all() and len(pts)
    if positive and pts[xcol].max() / pts[xcol].min() > 100:
        ax.set_xscale("log")
    if positive and pts[ycol].max() / pts[ycol].min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel(f"{xcol} ({'lower' if xmin else 'higher'} is better)")
    ax.set_ylabel(f"{ycol} ({'lower' if ymin else 'higher'} is better)")
    ax.set_title("Pareto front")
    ax.legend(fontsize=7)
    return _finish(fig, out)


def _trace_events(trace):
    if isinstance(trace, dict) and "trace_out" in trace and "traceEvents" not in trace:
        if not trace.get("trace_out"):
            raise InputError("this timeline result wrote no trace: pass trace_out= when making it", field="trace")
        trace = trace["trace_out"]
    if isinstance(trace, (str, Path)):
        text = read_text(trace, "trace", limit=1 << 30)  # a long serving trace is larger than a spec
        try:
            trace = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"not a JSON trace: {exc}", field="trace") from None
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise InputError("expected a Chrome trace (traceEvents) or a timeline result", field="trace")
    return events


def timeline(trace, *, max_events: int = 5000, out=None) -> Figure:
    """A Gantt chart of a Chrome trace: one row per process and track (pipeline stage and stream,
    serving instance), coloured by the slice name's first letters (F, B, W, ...) or category.

    ``trace`` is a trace JSON path or object (``perfsim estimate --trace-out``, ``perfsim serve
    --trace-out``) or a :func:`perfsim.timeline` result written with ``trace_out``. The whole run is
    drawn: up to ``max_events`` slices one bar each, more aggregated into time bins (each track's
    busy share of a bin, coloured by its busiest group; the title says so), never cut short.
    """
    from perfsim.report.plot.gantt import timeline as draw

    return draw(_trace_events(trace), max_events=max_events, out=out, finish=_finish)


__all__ = ["KINDS", "memory_stack", "pareto", "roofline", "time_breakdown", "timeline"]
