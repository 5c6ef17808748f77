"""Evaluate a grid of configurations: arguments → columns → closed forms → result arrays."""

from __future__ import annotations

import numpy as np

from perfsim.analytical.heterogeneous import bottleneck_device, placement_checks
from perfsim.analytical.inference import estimate_inference
from perfsim.analytical.power import inference_power, train_power
from perfsim.analytical.training import estimate_train
from perfsim.columns import build
from perfsim.graph.params import total_params
from perfsim.plan import Axis, Grid, Space, expand

_DETAIL_ROWS = 10_000  # rows up to which infeasibility reasons carry their numbers


def _plan_checks(c):
    """Checks that do not depend on the mode: degrees, divisibility, formats."""
    nd, tp, pp, cp, dp = c["num_devices"], c["tp"], c["pp"], c["cp"], c["dp"]
    return [
        (np.isnan(c["peak_flops"]), "the hardware has no tensor rate for this dtype", None),
        ((c["dequant"] > 0) & np.isnan(c["vector_flops"]),
         "weight_dtype differs from dtype but the hardware spec has no vector rate to convert weights", None),
        (np.abs(nd - tp * pp * dp * cp) > 1e-9, "num_devices is not tp x pp x dp x cp", None),
        (np.abs(dp - np.round(dp)) > 1e-9, "num_devices does not split into tp x pp x cp groups", None),
        ((np.asarray(c["heads"]) % np.asarray(tp) != 0) & (c["kv_heads"] > 1),
         "tp does not divide the attention heads", None),
        (np.asarray(c["layers"]) % np.asarray(pp) != 0, "pp does not divide the layers", None),
        ((c["experts"] > 0) & (np.asarray(c["experts"]) % np.asarray(c["ep"]) != 0),
         "ep does not divide the experts", None),
        ((c["ep"] > 1) & (np.asarray(tp * dp * cp) % np.asarray(c["ep"]) != 0),
         "ep does not divide tp x dp x cp", None),
        ((c["ep"] > 1) & (c["experts"] == 0), "ep > 1 needs an MoE model", None),
        ((c["zero"] > 0) & (np.asarray(dp * cp) % np.asarray(c["zero_shard_size"]) != 0),
         "zero_shard_size does not divide dp x cp", None),
        ((c["pim_args"] > 0) & (c["has_pim"] == 0), "pim_mode and sub_batches need a system with PIM memory", None),
        *placement_checks(c),
        ((c["schedule"] == 2) & (np.asarray(c["layers"]) % np.asarray(pp * c["virtual_stages"]) != 0),
         "pp x virtual_stages does not divide the layers", None),
    ]


def evaluate(args: dict):
    """Evaluate every combination of ``args``; returns ``(grid, outputs)``.

    ``outputs`` maps result keys (dotted for nested ones) to arrays of ``grid.n`` rows, plus
    ``feasible`` (bool) and ``reason`` (object: None or a string).
    """
    grid = expand(args)
    return grid, evaluate_grid(grid)


_CHUNK = 1 << 16  # rows per block: keeps the arrays of one block in cache


def evaluate_grid(grid: Grid) -> dict:
    """Evaluate a grid block by block (bounded memory, cache-sized arrays) and join the blocks."""
    if grid.n <= _CHUNK:
        return _evaluate_block(grid)
    out: dict = {}
    for start in range(0, grid.n, _CHUNK):
        stop = min(start + _CHUNK, grid.n)
        axes = {name: Axis(a.name, a.values, a.codes[start:stop] if len(a.values) > 1 else a.codes)
                for name, a in grid.axes.items()}
        _join(out, _evaluate_block(Grid(n=stop - start, axes=axes)), start, stop, grid.n)
    return out


def evaluate_rows(space: Space, start: int, stop: int) -> tuple[Grid, dict]:
    """Evaluate rows ``[start, stop)`` of a :class:`~perfsim.plan.Space` in cache-sized blocks;
    returns ``(grid, outputs)`` for those rows only (what a chunked sweep holds at a time)."""
    grid = space.block(start, stop)
    return grid, evaluate_grid(grid)


def _join(out: dict, block: dict, start: int, stop: int, n: int):
    for key, value in block.items():
        if key not in out:
            out[key] = np.empty(n, dtype=value.dtype)
        out[key][start:stop] = value


def evaluate_columns(args: dict):
    """Evaluate every combination of ``args`` in one block; returns ``(c, outputs)``: the columns
    the cost models read (:func:`perfsim.columns.build`) with the outputs, for callers that
    compose the same costs themselves (the timelines of :mod:`perfsim.events.pipeline`)."""
    grid = expand(args)
    c = build(grid)
    return c, _evaluate_block(grid, c)


def _evaluate_block(grid: Grid, c: dict | None = None) -> dict:
    c = build(grid) if c is None else c
    n = grid.n
    modes = grid.values("mode")
    results = []
    for mode in modes:
        fn, power = (estimate_train, train_power) if mode == "train" else (estimate_inference, inference_power)
        out, checks = fn(c)
        out.update(power(c, out))
        results.append((mode, out, checks))
    if len(results) == 1:
        out, checks = results[0][1], results[0][2]
    else:
        train = np.asarray(c["train"]) > 0
        out = {}
        keys = dict.fromkeys(k for _, o, _ in results for k in o)
        for key in keys:
            vals = {m: o.get(key, np.nan) for m, o, _ in results}
            out[key] = np.where(train, vals.get("train", np.nan), vals.get("inference", np.nan))
        checks = []
        for m, _, chk in results:
            sel = train if m == "train" else ~train
            checks += [(np.asarray(mask) & sel, short, detail) for mask, short, detail in chk]
    checks = _plan_checks(c) + checks
    out = {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)) for k, v in out.items()}
    feasible = np.ones(n, dtype=bool)
    reason = np.full(n, None, dtype=object)
    for mask, short, detail in checks:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), (n,))
        new = mask & feasible
        if new.any():
            if detail is not None and n <= _DETAIL_ROWS:
                for i in np.flatnonzero(new):
                    reason[i] = detail(int(i))
            else:
                reason[new] = short
            feasible &= ~mask
    out["feasible"] = feasible
    out["reason"] = reason
    out["bottleneck_device"] = bottleneck_device(c, out, n)
    out["parameters"] = np.broadcast_to(np.asarray(total_params(c), dtype=float), (n,))
    out["num_devices"] = np.broadcast_to(np.asarray(c["num_devices"], dtype=float), (n,))
    out["dp"] = np.broadcast_to(np.asarray(c["dp"], dtype=float), (n,))
    return out
