"""The plan an evaluation ran: every argument with its default filled in and the choices made.

Read from the flat outputs of :func:`perfsim.analytical.evaluate.evaluate` (``plan.*`` keys: the
engine's ZeRO stage and sequence parallelism, the recomputation and offload placement ``auto``
chose, the engine, the global and micro-batch), for the ``plan`` key of a result.
"""

from __future__ import annotations

import numpy as np

from perfsim.graph.params import balanced_split
from perfsim.plan.arguments import ARGUMENTS, MODE_ONLY, Recompute
from perfsim.plan.columns import engine_name
from perfsim.plan.grid import default_dtype
from perfsim.plan.offload import ARGUMENT_COLUMNS, AUTO_ARGUMENTS, is_auto, spelled


def resolved_plan(plan: dict, out: dict, dtype: str | None = None) -> dict:
    """Every argument as one estimate row resolved it: defaults filled in, ``auto`` choices made,
    the engine that ran, the layers of each pipeline stage. ``dtype``: the one the row ran at, where
    known (else the hardware's default is looked up)."""
    resolved = {}
    for name, (kind, default) in ARGUMENTS.items():
        value = default if plan.get(name) is None else plan[name]
        if kind == "int" and value is not None:
            value = int(value)  # 2.0 -> 2, as the columns read it
        resolved[name] = list(value) if isinstance(value, tuple) else value
    mode = resolved["mode"]
    resolved["dtype"] = plan.get("dtype") or dtype or device_dtype(plan["hardware"])
    for name in ("num_devices", "dp"):
        resolved[name] = int(round(float(out[name][0])))
    if "plan.recompute" in out and not np.isnan(out["plan.recompute"][0]):
        resolved["recompute"] = Recompute(int(out["plan.recompute"][0])).label
    for name in AUTO_ARGUMENTS:  # a searched placement: the one chosen
        prefix = ARGUMENT_COLUMNS[name]
        if is_auto(resolved[name]) and f"plan.{prefix}_frac_cpu" in out:
            cpu, nvme = (float(out[f"plan.{prefix}_frac_{t}"][0]) for t in ("cpu", "nvme"))
            resolved[name] = spelled((max(1.0 - cpu - nvme, 0.0), cpu, nvme))
    resolved["zero"] = int(out["plan.zero"][0])
    resolved["sp"] = bool(out["plan.sp"][0])
    resolved["runtime"] = engine_name(mode, plan.get("runtime"), float(out["plan.default_engine"][0]))
    if mode == "train":
        resolved["global_batch"] = int(round(float(out["plan.global_batch"][0])))
        resolved["micro_batch"] = int(round(float(out["plan.micro_batch"][0])))
    if resolved["pp_layers"] is None:
        layers = int(round(float(out["plan.layers"][0])))
        resolved["pp_layers"] = balanced_split(layers, resolved["pp"]) if resolved["pp"] <= layers else None
    for name, (only, _) in MODE_ONLY.items():  # what the other mode takes
        if only != mode:
            resolved.pop(name)
    return resolved


def device_dtype(hardware) -> str:
    """The compute type a plan on ``hardware`` (a name or a what-if dict) takes when none is given."""
    return default_dtype([hardware["base"] if isinstance(hardware, dict) else hardware])
