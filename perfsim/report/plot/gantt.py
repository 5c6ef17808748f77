"""The Gantt chart of a Chrome trace: one row per process and track (pipeline stage and stream,
serving instance), the whole run.

A trace of up to ``max_events`` slices is drawn slice by slice. A longer one (a serving run of
minutes has hundreds of thousands) is drawn aggregated, never cut: the run is split into time bins,
and each track's bar in a bin is as tall as the share of the bin its slices keep busy, coloured by
the group that kept it busiest. The title says when a chart is aggregated and into how many bins.
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib.figure import Figure

from perfsim.errors import InputError, check_whole

#: time bins of an aggregated chart at most (about a bin per pixel column of a 10-inch figure)
MAX_BINS = 1000


def _group(event):
    """Legend group of a slice: its category, refined by the name's letters (F0 → F, B3 → B)."""
    name = str(event.get("name", ""))
    head = re.match(r"[^\d.]*", name).group().strip() or name
    return f"{event.get('cat', 'task')}: {head}" if len(head) <= 16 else str(event.get("cat", "task"))


def _busy(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time inside each bin ``[edges[k], edges[k + 1])`` covered by the slices ``[starts, ends)``
    (overlapping slices counted each), from the covered time before each edge: one sort, no loop."""
    def before(points):  # sum over slices of max(0, edge - point), for every edge
        points = np.sort(points)
        count = np.searchsorted(points, edges, side="left")
        total = np.concatenate(([0.0], np.cumsum(points)))
        return count * edges - total[count]

    covered = before(starts) - before(ends)
    return np.diff(covered)


def _unit(span_us: float):
    """Time unit of the axis: seconds for a run longer than 10 s, else milliseconds."""
    return (1e6, "s") if span_us > 1e7 else (1e3, "ms")


def timeline(events: list, *, max_events: int = 5000, out=None, finish=None) -> Figure:
    """The chart of ``events`` (Chrome trace events); see :func:`perfsim.report.plot.timeline`."""
    max_events = check_whole(max_events, "max_events")
    names = {(e.get("pid"), None): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    names.update({(e.get("pid"), e.get("tid")): e["args"]["name"] for e in events
                  if e.get("ph") == "M" and e.get("name") == "thread_name"})
    slices = [e for e in events if e.get("ph") == "X"]
    if not slices:
        raise InputError("the trace has no slices to draw", field="trace")
    tracks = sorted({(e["pid"], e["tid"]) for e in slices})
    row = {t: i for i, t in enumerate(tracks)}
    groups = list(dict.fromkeys(_group(e) for e in sorted(slices, key=lambda e: e["ts"])))
    cmap = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    starts = np.asarray([float(e["ts"]) for e in slices])
    ends = starts + np.asarray([float(e.get("dur", 0.0)) for e in slices])
    first, last = float(starts.min()), float(ends.max())
    scale, unit = _unit(last - first)
    fig = Figure(figsize=(10, max(2.5, 0.35 * len(tracks) + 1.5)))
    ax = fig.add_subplot()
    rows = np.asarray([row[(e["pid"], e["tid"])] for e in slices])
    kinds = np.asarray([groups.index(_group(e)) for e in slices])
    title = "timeline"
    if len(slices) <= max_events:
        for k, g in enumerate(groups):
            sel = kinds == k
            ax.barh(rows[sel], (ends[sel] - starts[sel]) / scale, left=starts[sel] / scale, height=0.7,
                    color=cmap[g], edgecolor="black", lw=0.2, label=g)
    else:
        bins = max(1, min(MAX_BINS, max_events // max(len(tracks), 1)))
        edges = np.linspace(first, last, bins + 1)
        width = edges[1] - edges[0]
        busy = np.zeros((len(tracks), len(groups), bins))
        for r in range(len(tracks)):
            for k in range(len(groups)):
                sel = (rows == r) & (kinds == k)
                if sel.any():
                    busy[r, k] = _busy(starts[sel], ends[sel], edges)
        share = np.minimum(busy.sum(axis=1) / width, 1.0) if width > 0 else np.ones((len(tracks), bins))
        top = busy.argmax(axis=1)
        for k, g in enumerate(groups):
            r, b = np.nonzero((top == k) & (busy.sum(axis=1) > 0))
            ax.barh(r, width / scale, left=edges[b] / scale, height=0.8 * np.maximum(share[r, b], 0.05),
                    color=cmap[g], lw=0, label=g)
        title += (f"\naggregated: {len(slices):,} slices in {bins:,} bins of {width / scale:.3g} {unit} "
                  "(bar height: busy share of the bin; colour: its busiest group)")
    ax.set_xlim(first / scale, last / scale)
    labels = [f"{names.get((p, None), p)}: {names.get((p, t), t)}" for p, t in tracks]
    ax.set_yticks(range(len(tracks)), labels, fontsize=7)
    ax.set_ylim(len(tracks) - 0.5, -0.5)
    ax.set_xlabel(f"time ({unit})")
    ax.set_title(title, fontsize=9)
    if len(groups) <= 12:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return finish(fig, out) if finish is not None else fig

