"""Arguments of a serving scenario: what ``serve`` takes, checked before any work."""

from __future__ import annotations

import os

import numpy as np

from perfsim.errors import InputError, check_positive, check_whole, unknown
from perfsim.events.serving.requests import check_lengths
from perfsim.events.serving.simulator import SCHEDULERS
from perfsim.plan.grid import ARGUMENTS, check_value

#: serve's own arguments and their defaults
SERVE_ARGUMENTS = {
    "arrival_rate": None, "trace": None, "num_requests": None, "prompt_len": 2048, "gen_len": 256,
    "scheduler": "continuous", "max_batch": None, "max_batched_tokens": None, "chunk_size": None,
    "max_prefill_tokens": None,
    "disaggregate": None, "ttft_slo_s": None, "tpot_slo_s": None, "seed": 0, "trace_out": None,
    "power_trace": False, "power_window_s": 1.0,
}
DEFAULT_REQUESTS = 1000
#: limits of an instance where neither the scenario nor the engine profile gives one: sequences per
#: iteration (vLLM's long-standing max_num_seqs), prompt tokens per continuous prefill iteration,
#: tokens per chunked-prefill iteration (SARATHI-Serve's chunk)
DEFAULT_MAX_BATCH = 256
DEFAULT_PREFILL_TOKENS = 8192
DEFAULT_CHUNK = 512


def serving_limits(o: dict, engine_seqs: float, engine_tokens: float) -> None:
    """Fill in the batching limits not given: the engine profile's own (``max_num_seqs``,
    ``max_num_batched_tokens``; NaN where it has none), else the defaults above. ``max_batched_tokens``
    is the token budget of an iteration: a continuous prefill iteration's prompt tokens
    (``max_prefill_tokens``) and a chunked-prefill iteration's tokens (``chunk_size``) unless those
    are given themselves."""
    def engine(value):
        return int(value) if value == value else None  # NaN: the profile gives none

    budget = o["max_batched_tokens"] if o["max_batched_tokens"] is not None else engine(engine_tokens)
    if o["max_batch"] is None:
        o["max_batch"] = engine(engine_seqs) or DEFAULT_MAX_BATCH
    if o["max_prefill_tokens"] is None:
        o["max_prefill_tokens"] = budget or DEFAULT_PREFILL_TOKENS
    if o["chunk_size"] is None:
        o["chunk_size"] = budget or DEFAULT_CHUNK
    o["max_batched_tokens"] = budget
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
    for name in ("max_batch", "max_batched_tokens", "chunk_size", "max_prefill_tokens"):
        if o[name] is not None:
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
