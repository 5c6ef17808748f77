"""Serving simulator: requests arrive, instances batch them iteration by iteration.

Instances (``tp × pp`` devices each; ``dp`` of them, or prefill and decode pools when
disaggregated) run one of :data:`SCHEDULERS` (:mod:`perfsim.events.serving.schedulers`). With
``disaggregate`` (Splitwise, DistServe) a request's KV cache is shipped, after its prefill, to the
least-loaded decode instance and its first token counts from the arrival of the cache there.

Arrivals are routed to the instance with the fewest outstanding requests (the lowest index on a
tie). The simulation is an :class:`~perfsim.events.engine.EventQueue` of iteration ends and
cache arrivals merged with the arrival stream (arrivals first at equal times). Per-request state
lives in flat lists (:class:`~perfsim.events.serving.state.RequestState`).

Attention data parallelism with expert parallelism (DEP: ``dp`` replicas whose MoE layers share
one expert group) runs the ``sync_ranks`` instances of a group in lock step: every MoE layer's
dispatch and combine wait for every rank, so the group starts its iterations together and ends
them together, when its slowest rank is done ("the execution time for the Attention module in any
given iteration is bounded by the rank with the highest workload", TensorRT-LLM,
docs/source/blogs/tech_blog/blog10_ADP_Balance_Strategy.md @ 011cfc2c). A rank with nothing to run
waits at the barrier (TensorRT-LLM pads it with a dummy request: PyExecutor._pad_attention_dp_dummy_request,
tensorrt_llm/_torch/pyexecutor/py_executor.py). The group's iteration is its
slowest rank's work outside the MoE layers plus the MoE layers at the group's token count
(:meth:`~perfsim.events.serving.iteration_cost.IterationCost.group_step_s`); each rank's records
keep the length of its own work, the wait is idle time.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass

import numpy as np

from perfsim.events.engine import EventQueue
from perfsim.events.serving.schedulers import (
    ChunkedInstance,
    ContinuousInstance,
    DecodeInstance,
    PrefillInstance,
    StaticInstance,
)
from perfsim.events.serving.state import DONE, RequestState

SCHEDULERS = ("static", "continuous", "chunked-prefill")
_ITERATION_END, _KV_ARRIVAL, _GROUP_END = 0, 1, 2  # kinds of event


@dataclass
class ServeConfig:
    """Scheduler settings of one run (already checked)."""

    scheduler: str
    max_batch: int
    chunk_size: int
    max_prefill_tokens: int
    kv_blocks: int  # per instance (decode instances when disaggregated)
    instances: int  # colocated instances (dp)
    prefill_instances: int = 0
    prefill_kv_blocks: int = 0
    devices_per_instance: int = 1
    devices_per_node: int = 8
    disaggregated: bool = False
    sync_ranks: int = 1  # colocated instances that run in lock step (one DEP expert group)


@dataclass
class SimResult:
    """What a run produced: per-request times, token gaps, and each instance's iterations."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    itl_value_s: np.ndarray
    itl_weight: np.ndarray
    preemptions: int
    instances: list  # [(name, kind, records array, busy_s)], kind: "colocated" | "prefill" | "decode"
    kv_transfers: np.ndarray  # (tokens, seconds, same_node) per shipped cache


def _least_loaded(pool):
    best = pool[0]
    for inst in pool[1:]:
        if inst.load < best.load:
            best = inst
    return best


def simulate(requests, cfg: ServeConfig, cost, *, transfer=None) -> SimResult:
    """Run the request set through the instances; ``transfer(tokens, same_node)`` prices a KV shipment.

    The run makes no reference cycles (what it made is freed as it returns), so Python's cycle
    collector is paused while it runs: it would find nothing, only walk the per-request lists again
    and again as the loop's small objects pile up (some 50 collections in a run of 100,000 requests)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _simulate(requests, cfg, cost, transfer)
    finally:
        if paused:
            gc.enable()


def _simulate(requests, cfg, cost, transfer):
    req = RequestState(requests.arrival_s, requests.prompt_len, requests.gen_len)
    if cfg.disaggregated:
        prefill = [PrefillInstance(i, cost, req, cfg, cfg.prefill_kv_blocks) for i in range(cfg.prefill_instances)]
        decode = [DecodeInstance(i, cost, req, cfg, cfg.kv_blocks) for i in range(cfg.instances)]
        instances = prefill + decode
        entry = prefill
    else:
        kind = {"static": StaticInstance, "continuous": ContinuousInstance, "chunked-prefill": ChunkedInstance}
        instances = [kind[cfg.scheduler](i, cost, req, cfg, cfg.kv_blocks) for i in range(cfg.instances)]
        entry = instances
        prefill, decode = [], []
    events = EventQueue()
    push, peek_time, pop_due = events.push, events.peek_time, events.pop_due
    arrival = req.arrival
    n = len(arrival)
    i = 0
    transfers = []
    inf = math.inf
    size = cfg.devices_per_instance
    per_node = cfg.devices_per_node

    # lock-stepped groups of colocated instances (DEP): members, whether the group runs, who ran
    sync = max(1, min(int(cfg.sync_ranks), len(instances))) if not cfg.disaggregated else 1
    group_of = {inst: k // sync for k, inst in enumerate(instances)} if sync > 1 else {}
    members = [instances[k:k + sync] for k in range(0, len(instances), sync)] if sync > 1 else []
    group_busy = [False] * len(members)
    group_ran: list = [()] * len(members)
    alone = len(instances) == 1  # the only instance: the arrivals are all its own, taken in as they come

    def start(inst, t):
        if group_of:
            start_group(group_of[inst], t)
            return
        dur = inst.begin(t)
        if inst.out:
            dispatch(inst, t)
        if dur is None:
            inst.idle = True
            return
        inst.idle = False
        inst.busy_s += dur
        push(t + dur, _ITERATION_END, inst)

    def start_group(g, t):
        """Start the next iteration of every rank of group ``g``; it lasts as long as the slowest."""
        if group_busy[g]:
            return
        ran, steps, tokens = [], [], []
        for inst in members[g]:
            dur = inst.begin(t)
            if inst.out:
                dispatch(inst, t)
            if dur is not None:
                ran.append(inst)
                steps.append(dur)
                tokens.append(inst.rec.rows[-1][3])
        busy = bool(ran)
        for inst, dur in zip(ran, steps, strict=True):
            inst.busy_s += dur
        if busy:
            longest = cost.group_step_s(steps, tokens, len(members[g]))
        for inst in members[g]:
            inst.idle = not busy
        group_busy[g] = busy
        group_ran[g] = ran
        if busy:
            push(t + longest, _GROUP_END, g)

    def end_group(g, t):
        group_busy[g] = False
        for inst in group_ran[g]:
            inst.end(t)
            if inst.out:
                dispatch(inst, t)
        group_ran[g] = ()
        start_group(g, t)

    def same_node(p_inst, d_inst):
        a = p_inst.index * size
        b = cfg.prefill_instances * size + d_inst.index * size
        return size <= per_node and a // per_node == b // per_node

    def dispatch(inst, t):
        """Hand on the requests leaving ``inst`` at ``t``."""
        leaving, inst.out = inst.out, []
        if isinstance(inst, PrefillInstance):
            for r in leaving:
                kv_len = req.prompt[r] + req.done[r]
                dest = _least_loaded(decode)
                near = same_node(inst, dest)
                dt = float(transfer(kv_len, near))
                transfers.append((kv_len, dt, near))
                if inst.produce(r, t + dt) <= 0:
                    req.finish[r] = t + dt
                    req.state[r] = DONE
                    continue
                dest.load += 1
                push(t + dt, _KV_ARRIVAL, (dest, r))
        else:  # preempted on a decode instance: its cache is recomputed on a prefill instance
            for r in leaving:
                target = _least_loaded(prefill)
                target.enqueue(r, front=True)
                if target.idle:
                    start(target, t)

    while True:
        t_done = peek_time()
        t_arr = arrival[i] if i < n else inf
        if t_arr == inf and t_done == inf:
            break
        if t_arr <= t_done:
            t = t_arr
            touched = []
            while i < n and arrival[i] == t:
                inst = _least_loaded(entry)
                inst.enqueue(i)
                if inst.idle:
                    touched.append(inst)
                i += 1
            for inst in touched:
                if inst.idle:
                    start(inst, t)
            continue
        t, due = pop_due()
        if len(due) == 1 and due[0][0] == _ITERATION_END and due[0][1].fast and not group_of:
            # one instance's iteration ends alone: it runs on, iteration after iteration, while
            # each ends before the next arrival or event (what the queue would hand it next anyway)
            inst = due[0][1]
            while True:
                t_arr = arrival[i] if i < n and not alone else inf
                t_next = peek_time()
                t, dur, i = inst.run(t, t_arr if t_arr < t_next else t_next, arrival if alone else None, i)
                left = bool(inst.out)
                if left:
                    dispatch(inst, t)
                if dur is None:
                    inst.idle = True
                    break
                if left and t + dur < (arrival[i] if i < n else inf) and t + dur < peek_time():
                    t += dur
                    continue
                push(t + dur, _ITERATION_END, inst)
                break
            continue
        for kind, payload in due:
            if kind == _ITERATION_END:
                inst = payload
                inst.end(t)
                if inst.out:
                    dispatch(inst, t)
                start(inst, t)
            elif kind == _GROUP_END:
                end_group(payload, t)
            else:  # a KV cache arrives at a decode instance
                inst, r = payload
                inst.waiting.append(r)
                if inst.idle:
                    start(inst, t)
    # start and dispatch call each other (a reference cycle through their cells): emptied, the run's
    # per-request lists and records go as soon as it returns, not when the cycle collector finds them
    start = dispatch = None
    roles = {PrefillInstance: "prefill", DecodeInstance: "decode"}
    itl_value, itl_weight = req.itl([inst.rec for inst in instances])
    return SimResult(
        first_token_s=np.asarray(req.first), finish_s=np.asarray(req.finish),
        itl_value_s=itl_value, itl_weight=itl_weight,
        preemptions=req.preemptions,
        instances=[(inst.name, roles.get(type(inst), "colocated"), inst.rec.array(), inst.busy_s)
                   for inst in instances],
        kv_transfers=np.asarray(transfers, dtype=float).reshape(-1, 3))
