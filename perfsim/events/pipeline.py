"""Pipeline-parallel training step as a task graph: schedules, hand-offs, gradient sync, update.

Each pipeline stage is a device (its tensor/context-parallel peers move in lockstep) with a
compute stream, a data-parallel communication stream and one outgoing link per neighbour. Per
micro-batch and model chunk a stage runs a forward ``F``, a backward ``B`` (preceded by the
recompute ``R`` when activations are recomputed) and, in the zero-bubble schedule, a separate
weight-gradient pass ``W``. Activations travel to the next stage and gradients to the previous
one as link tasks, so a hand-off overlaps the sender's next pass. Gradient buckets (one per
layer group) go to the data-parallel stream as the passes that produce them run, and the
optimizer step waits for the stage's last bucket.

The order in which a stage runs its passes is the schedule:

=============  ==================================================================================
gpipe          all forwards, then all backwards (Huang et al. 2019)
1f1b           ``pp - s - 1`` warm-up forwards on stage ``s``, then one forward and one backward in
               turn, then the remaining backwards (PipeDream-Flush; Narayanan et al. 2021)
interleaved    ``v`` model chunks per stage, micro-batches in groups of ``pp`` (of at least ``pp``
               when ``pp`` does not divide them), ``2 (pp - s - 1) + (v - 1) pp`` warm-up forwards
               (Megatron-LM's interleaved 1F1B; Narayanan et al. 2021, sec. 2.2)
zero-bubble    ZB-H1: the 1F1B order of ``F`` and ``B`` with the weight gradients of stage ``s``
               deferred by ``s`` micro-batches, filling the drain (Qi et al. 2024, sec. 3)
=============  ==================================================================================

``dualpipe`` (DeepSeek-V3's bidirectional schedule, whose forward and backward chunks overlap
each other) is not simulated: it stays with the closed form of
:mod:`perfsim.analytical.training`.

Durations are not computed here: they come from :func:`perfsim.analytical.training.stage_times`,
the same cost model as the closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfsim.analytical.training import dualpipe_pairing, stage_times
from perfsim.events.engine import Engine
from perfsim.graph.params import balanced_split, stage_params_per_device
from perfsim.plan.arguments import Schedule

SIMULATED = ("gpipe", "1f1b", "interleaved", "zero-bubble")
#: where the embedding and the LM head run: ``ends`` puts the embedding on the first stage and
#: the final norm, LM head and loss on the last; ``uniform`` spreads them evenly over the stages
STAGE_COSTS = ("ends", "uniform")


@dataclass(frozen=True)
class StageCosts:
    """Durations of one configuration's step, in seconds.

    ``forward_s``, ``backward_s``, ``wgrad_s`` and ``recompute_s`` are arrays of shape
    ``(pp, v)``: one micro-batch of model chunk ``k`` on stage ``s``. ``backward_s`` is the whole
    backward (input and weight gradients); ``wgrad_s`` is its weight-gradient part, run as a
    separate pass by the zero-bubble schedule. ``handoff_s`` is one activation (or gradient)
    transfer between neighbouring stages; ``dp_per_micro_s`` and ``dp_per_step_s`` (arrays of
    ``pp``) the data-parallel traffic of every micro-batch and of the step; ``optimizer_s``
    (``pp``) the update; ``buckets`` the gradient buckets (layer groups) per stage; ``overlap``
    the fraction of its window (the passes that produce it) gradient traffic may hide behind, the
    runtime's ability (see :func:`build_step`).
    """

    forward_s: np.ndarray
    backward_s: np.ndarray
    wgrad_s: np.ndarray
    recompute_s: np.ndarray
    handoff_s: float
    dp_per_micro_s: np.ndarray
    dp_per_step_s: np.ndarray
    optimizer_s: np.ndarray
    buckets: int = 1
    overlap: float = 1.0


def _scalar(x) -> float:
    return float(np.asarray(x, dtype=float).reshape(-1)[0])


def stage_costs(c, stages: str = "ends", layers=None):
    """Durations of one configuration (``c``: columns of a one-row grid) per stage and chunk.

    Everything is priced by :func:`perfsim.analytical.training.stage_times`, as for the closed
    form; only the placement differs: each stage holds its layers (``layers``, one count per stage,
    or the balanced split of :func:`perfsim.graph.params.balanced_split`) in ``v`` chunks (``v``
    virtual stages under the interleaved schedule, else 1), the first chunk of the first stage the
    embedding and the last chunk of the last stage the LM head, with each stage's own weights
    setting its data-parallel traffic and optimizer step. ``stages="uniform"`` gives every stage
    and chunk the mean of those costs. Returns ``(costs, n_micro, step_overhead_s)``.
    """
    if stages not in STAGE_COSTS:
        raise ValueError(f"stages must be one of {STAGE_COSTS}, got {stages!r}")
    pp = int(_scalar(c["pp"]))
    v = int(_scalar(c["virtual_stages"])) if _scalar(c["schedule"]) == Schedule.INTERLEAVED else 1
    stage = np.arange(pp)
    t = stage_times(c, stage_params_per_device(c, stage))
    first = (stage == 0)[:, None] & (np.arange(v) == 0)[None, :]
    last = (stage == pp - 1)[:, None] & (np.arange(v) == v - 1)[None, :]

    counts = np.asarray(layers if layers is not None else balanced_split(round(_scalar(c["layers"])), pp), float)
    # the priced layers are the fullest stage's; each stage runs its own count of them
    scale = (counts / _scalar(c["stage_layers"]))[:, None]

    # DualPipe: each stage's all-to-alls hidden in its chunk pairs
    paired = np.broadcast_to(np.asarray(dualpipe_pairing(c, t), dtype=float), (pp,))[:, None]

    def chunks(key):
        layer_part = np.full((pp, v), _scalar(t[f"layers_{key}"]) / v) * scale
        return paired * (layer_part + first * _scalar(t[f"embedding_{key}"]) + last * _scalar(t[f"lm_head_{key}"]))

    def per_stage(key):
        return np.broadcast_to(np.asarray(t[key], dtype=float), (pp,)).copy()

    parts = {"forward_s": chunks("forward_s"), "backward_s": chunks("backward_s"), "wgrad_s": chunks("wgrad_s"),
             "recompute_s": paired * np.full((pp, v), _scalar(t["recompute_s"]) / v) * scale,
             "dp_per_micro_s": per_stage("dp_per_micro_s"), "dp_per_step_s": per_stage("dp_per_step_s"),
             "optimizer_s": per_stage("optimizer_s")}
    if stages == "uniform":
        parts = {k: np.full_like(a, a.mean()) for k, a in parts.items()}
    costs = StageCosts(**parts, handoff_s=_scalar(t["handoff_s"]), buckets=round(_scalar(t["buckets"])),
                       overlap=_scalar(t["dp_overlap"]))
    return costs, round(_scalar(t["n_micro"])), _scalar(t["step_overhead_s"])


def gpipe(pp, n, v):
    """All forwards, then all backwards, on every stage."""
    return [[("F", 0, j) for j in range(n)] + [("B", 0, j) for j in range(n)] for _ in range(pp)]


def one_f_one_b(pp, n, v):
    """PipeDream-Flush: warm-up forwards, then one forward / one backward, then the drain."""
    orders = []
    for s in range(pp):
        warmup = min(pp - s - 1, n)
        order = [("F", 0, j) for j in range(warmup)]
        for i in range(n - warmup):
            order += [("F", 0, warmup + i), ("B", 0, i)]
        order += [("B", 0, j) for j in range(n - warmup, n)]
        orders.append(order)
    return orders


def interleaved(pp, n, v):
    """Megatron-LM's interleaved 1F1B over ``v`` chunks per stage.

    Micro-batches go through the chunks in groups of ``pp`` (``n // pp`` groups of near-equal
    size when ``pp`` does not divide ``n``, as PyTorch's flexible interleaved schedule does), and
    stage ``s`` runs ``2 (pp - s - 1) + (v - 1) · group`` warm-up forwards.
    """
    if v == 1:  # one chunk per stage: Megatron-LM runs the plain 1F1B schedule
        return one_f_one_b(pp, n, v)
    rounds = max(n // pp, 1)
    sizes = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    starts = np.cumsum([0, *sizes])
    table = [(k, j) for r in range(rounds) for k in range(v) for j in range(starts[r], starts[r + 1])]
    forwards = [("F", k, int(j)) for k, j in table]
    backwards = [("B", v - 1 - k, int(j)) for k, j in table]
    total = n * v
    orders = []
    for s in range(pp):
        warmup = total if n == pp else min(2 * (pp - s - 1) + (v - 1) * sizes[0], total)
        order = forwards[:warmup]
        for i in range(total - warmup):
            order += [forwards[warmup + i], backwards[i]]
        order += backwards[total - warmup:]
        orders.append(order)
    return orders


def zero_bubble(pp, n, v):
    """ZB-H1: 1F1B order of forwards and input-gradient backwards; stage ``s`` runs the weight
    gradients ``s`` micro-batches late, the last ``s`` of them after its final backward."""
    orders = []
    for s, order in enumerate(one_f_one_b(pp, n, v)):
        out = []
        for kind, k, j in order:
            out.append((kind, k, j))
            if kind == "B" and j >= s:
                out.append(("W", k, j - s))
        out += [("W", 0, j) for j in range(n - min(s, n), n)]
        orders.append(out)
    return orders


ORDERS = {"gpipe": gpipe, "1f1b": one_f_one_b, "interleaved": interleaved, "zero-bubble": zero_bubble}
KINDS = ("compute", "handoff", "data_parallel", "optimizer")
_COMPUTE, _HANDOFF, _DATA_PARALLEL, _OPTIMIZER = range(len(KINDS))


def _release(durations, buckets: int, overlap: float):
    """Where each of ``buckets`` gradient buckets is released within a window of passes with
    these ``durations`` (run one after another): ``(pass index, lag after its start)``. The
    buckets follow the window's last ``overlap`` fraction evenly, the last one at its end; with
    no overlap all wait for the end."""
    ends = np.cumsum(durations)
    total = ends[-1]
    out = []
    for i in range(buckets):
        at = total * ((1.0 - overlap) + overlap * (i + 1) / buckets)
        m = min(int(np.searchsorted(ends, at * (1.0 - 1e-12))), len(durations) - 1)
        out.append((m, max(at - (ends[m] - durations[m]), 0.0)))
    return out


def build_step(costs: StageCosts, schedule: str, n_micro: int):
    """Task graph of one training step; returns ``(engine, kind, stage)``: the
    :class:`~perfsim.events.engine.Engine` and, per task, its index into :data:`KINDS` and its
    pipeline stage.

    Gradient traffic goes out in ``buckets`` layer groups per stage: the step's (ZeRO-0/1) while
    each chunk's last gradient pass runs, every micro-batch's (ZeRO-2/3: gathers and
    reduce-scatters) while its passes run. A runtime that cannot overlap (``overlap == 0``) sends
    them after the window, and the stage's next pass waits for them.
    """
    pp, v = np.shape(costs.forward_s)
    split_w = schedule == "zero-bubble"
    e = Engine()
    kind: list[int] = []
    where: list[int] = []

    def add(name, resource, duration, k, stage, deps=(), after_start=(), args=None):
        kind.append(k)
        where.append(stage)
        return e.task(name, resource, duration, deps, after_start=after_start, args=args)

    compute = [e.resource("compute", process=f"stage {s}") for s in range(pp)]
    comm = [e.resource("data-parallel", process=f"stage {s}") for s in range(pp)]
    links: dict = {}

    def link(src, dst):
        if (src, dst) not in links:
            links[(src, dst)] = e.resource(f"send to stage {dst}", process=f"stage {src}")
        return links[(src, dst)]

    label = (lambda k, j: f"{j}.{k}") if v > 1 else (lambda k, j: f"{j}")
    ids: dict = {}
    following: dict = {}  # next pass on the same stream
    passes: dict = {}  # (stage, chunk, micro-batch) -> its passes in order
    grads: list[list[int]] = [[-1] * v for _ in range(pp)]  # last gradient pass per chunk
    last = [None] * pp
    for s, order in enumerate(ORDERS[schedule](pp, n_micro, v)):
        for p, k, j in order:
            args = {"micro_batch": j, "chunk": k} if v > 1 else {"micro_batch": j}
            steps = [("R", costs.recompute_s[s, k])] if p == "B" and costs.recompute_s[s, k] > 0 else []
            duration = {"F": costs.forward_s, "W": costs.wgrad_s}.get(p, costs.backward_s)[s, k]
            steps.append((p, duration - (costs.wgrad_s[s, k] if p == "B" and split_w else 0.0)))
            for q, duration in steps:
                task = ids[q, s, k, j] = add(f"{q}{label(k, j)}", compute[s], duration, _COMPUTE, s,
                                             () if last[s] is None else (last[s],), args=args)
                if last[s] is not None:
                    following[last[s]] = task
                last[s] = task
                passes.setdefault((s, k, j), []).append(task)
            if p == "W" or (p == "B" and not split_w):
                grads[s][k] = last[s]

    # hand-offs: model chunk k of stage s is virtual stage g = k * pp + s
    stages = pp * v
    for j in range(n_micro):
        for g in range(stages):
            s, k = g % pp, g // pp
            first_b = ids.get(("R", s, k, j), ids["B", s, k, j])
            e.depend(first_b, [ids["F", s, k, j]])
            if split_w:
                e.depend(ids["W", s, k, j], [ids["B", s, k, j]])
            if g + 1 < stages:  # activations to the next virtual stage
                t, u = (g + 1) % pp, (g + 1) // pp
                src = ids["F", s, k, j]
                if t != s:
                    src = add(f"F{label(k, j)}", link(s, t), costs.handoff_s, _HANDOFF, s, [src],
                              args={"micro_batch": j})
                e.depend(ids["F", t, u, j], [src])
            if g > 0:  # gradients to the previous virtual stage
                t, u = (g - 1) % pp, (g - 1) // pp
                src = ids["B", s, k, j]
                if t != s:
                    src = add(f"B{label(k, j)}", link(s, t), costs.handoff_s, _HANDOFF, s, [src],
                              args={"micro_batch": j})
                e.depend(ids.get(("R", t, u, j), ids["B", t, u, j]), [src])

    per_chunk = max(int(costs.buckets) // v, 1)
    o = float(costs.overlap)
    for s in range(pp):
        # without overlap the step's traffic waits for the stage's last pass, whatever its chunk
        windows = [([grads[s][k] if o > 0.0 else last[s]], costs.dp_per_step_s[s] / v) for k in range(v)]
        if costs.dp_per_micro_s[s] > 0:
            windows += [(passes[s, k, j], costs.dp_per_micro_s[s] / v) for k in range(v) for j in range(n_micro)]
        buckets = []
        for window, amount in windows:
            if amount <= 0:
                continue
            sent = []
            for i, (m, lag) in enumerate(_release([e.durations[t] for t in window], per_chunk, o)):
                sent.append(add(f"grads {e.names[window[-1]]} [{i + 1}/{per_chunk}]", comm[s], amount / per_chunk,
                                _DATA_PARALLEL, s, after_start=[(window[m], lag)]))
            if o == 0.0 and window[-1] in following:
                e.depend(following[window[-1]], sent)
            buckets += sent
        add("optimizer", compute[s], costs.optimizer_s[s], _OPTIMIZER, s, [last[s], *buckets])
    return e, np.asarray(kind), np.asarray(where)


def simulate(costs: StageCosts, schedule: str, n_micro: int, step_overhead_s: float = 0.0) -> dict:
    """Run one step's graph; returns the step time, its breakdown, busy time per stage
    (``per_stage_s``), the :class:`~perfsim.events.engine.Schedule` and each task's ``kind``.

    The breakdown sums to ``step_time_s``: ``compute_s`` is the busiest stage's passes,
    ``p2p_exposed_s`` what the hand-offs add to the step (the step with them minus the step
    without), ``dp_exposed_s`` what data-parallel traffic adds on top of the rest, ``optimizer_s``
    the busiest stage's update, ``overhead_s`` the runtime's per-step cost and ``idle_s`` the
    pipeline bubble: the rest, the time the busiest stage waits for the others.
    """
    if schedule not in ORDERS:
        raise ValueError(f"schedule {schedule!r} is not simulated; simulated: {', '.join(SIMULATED)}")
    engine, kind, stage = build_step(costs, schedule, int(n_micro))
    full = engine.run()
    durations = np.asarray(engine.durations)
    handoff, sync = kind == _HANDOFF, kind == _DATA_PARALLEL
    no_p2p = engine.run(np.where(handoff, 0.0, durations)).makespan_s
    no_comm = engine.run(np.where(handoff | sync, 0.0, durations)).makespan_s
    pp = np.shape(costs.forward_s)[0]
    passes = kind == _COMPUTE
    busy = np.bincount(stage[passes], weights=durations[passes], minlength=pp)
    busiest = int(np.argmax(busy))
    optimizer = float(costs.optimizer_s[busiest])
    step = full.makespan_s + step_overhead_s
    breakdown = {
        "compute_s": float(busy[busiest]),
        "p2p_exposed_s": full.makespan_s - no_p2p,
        "dp_exposed_s": no_p2p - no_comm,
        "optimizer_s": optimizer,
        "overhead_s": float(step_overhead_s),
        "idle_s": float(no_comm - busy[busiest] - optimizer),
    }
    breakdown = {k: 0.0 if abs(x) < 1e-12 * step else x for k, x in breakdown.items()}  # rounding, not time
    return {"step_time_s": step, "bubble_fraction": breakdown["idle_s"] / step, "per_stage_s": busy.tolist(),
            "breakdown": breakdown, "schedule": full, "kind": [KINDS[k] for k in kind]}
