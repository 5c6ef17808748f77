"""Power and energy of a run, from the work its devices do: counts x energy per action + floors.

A device's mean power over a span of ``T`` seconds in which it does ``F`` FLOPs, moves ``M``
bytes through device memory and sends ``L`` bytes over the fabric is

    P = idle_w + active_w + matrix_w · F / (T · peak) + e_mem · M / T + e_link · L / T,

at the top clock. Where that would pass the board limit ``tdp_w`` the device runs at a lower
clock (the board limit is a power cap like ``power_cap_w``, below). ``idle_w`` is a powered,
idle board; ``active_w`` is the floor added while a job runs (clocks, voltage and front-ends
up, even with no math or memory traffic); ``matrix_w`` is the matrix engines' dynamic power at
their full dense rate; ``e_mem`` and ``e_link`` are energies per byte (``memory_pj_per_byte``,
``link_pj_per_byte``). This is the action-count form of Accelergy (Wu et al., ICCAD'19) and of
GPU power models such as GPUWattch (Leng et al., ISCA'13): static plus the sum of activity x energy.
Compute-bound phases (prefill, training GEMMs) reach the limit, memory-bound decode stays far
below it, as Splitwise measured (Patel et al., ISCA'24).

**Host gaps.** The time inside a span in which the device waits with no kernel running (the
engine's step overhead and per-sequence host work, the kernels' launch gaps) draws ``host_gap_w``
where a spec states it, in place of the busy floor ``idle_w + active_w`` (:func:`gap_floor`); the
clock solve sees the same power.

**Power caps and DVFS.** Under its cap (:func:`board_cap`: ``power_cap_w`` where a plan sets one
below the board limit, else ``tdp_w``) the device lowers its clock; the clocked terms and the solve
for the clock are :mod:`perfsim.cost.clock`.

The servers' host power and wall energy are :mod:`perfsim.cost.wall`; the power and energy of a
whole run (a request batch, a training step or job) are composed in :mod:`perfsim.analytical.energy`.

Every function takes the column dict ``c`` (:mod:`perfsim.plan.columns`) and result arrays, and
returns arrays of the broadcast shape.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.cost.clock import (
    CAP_TOLERANCE,
    LOWEST_CLOCK,
    _factors,
    _Numbers,
    _ops,
    clip_span,
    clocked_seconds,
    per_second,
    solve_clock,
    solve_clocks,
)
from perfsim.plan.devices import KIND_NAMES
from perfsim.plan.rows import Detail, any_row, floats, numeric, where_one

#: ``main_kind`` of a GPU (:data:`perfsim.plan.devices.KIND_NAMES`): its board limit lowers the clock
_GPU = float(KIND_NAMES.index("gpu"))

COMPONENTS = ("idle", "active", "matrix", "memory", "link", "vector", "pim")


def _dynamic(c, seconds, flops, hbm_bytes, link_bytes, vector_ops=0.0, clip=True):
    """Dynamic power of one device over a span at the top clock (W): ``matrix``, ``memory``,
    ``link``, ``vector`` (NPU vector engine, arrays only) and their unclipped ``total``. Where
    ``clip`` (a bool, or a bool array over rows) the parts are scaled together where their sum
    would pass ``tdp_w`` (a span priced without the clock the limit sets, or a device whose limit
    does not lower the clock); elsewhere they are what the work draws at the top clock (the DVFS
    solve lowers the clock instead).

    Arrays (NaN where the span is unknown, 0 where it is empty) or Python numbers (the serving
    simulator's iterations, priced one at a time)."""
    xp = _ops(seconds, flops, hbm_bytes, link_bytes, vector_ops)
    dynamic = {
        "matrix": c["matrix_w"] * xp.per_second(flops, seconds) / c["peak_flops"],
        "memory": c["memory_j_per_byte"] * xp.per_second(hbm_bytes, seconds),
        "link": c["link_j_per_byte"] * xp.per_second(link_bytes, seconds),
    }
    if vector_ops > 0 if xp is _Numbers else any_row(numeric(vector_ops) > 0):
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(np.asarray(vector_ops) > 0, per_second(vector_ops, seconds) / c["vector_flops"], 0.0)
        share = np.where(np.isfinite(share) | np.isnan(np.asarray(seconds, dtype=float)), share, 0.0)
        dynamic["vector"] = c.get("vector_w", 0.0) * share
    total = dynamic["matrix"] + dynamic["memory"] + dynamic["link"] + dynamic.get("vector", 0.0)
    headroom = xp.maximum(c["tdp_w"] - c["idle_w"] - c["active_w"], 0.0)
    scale = xp.where(clip & (total > headroom), xp.divide(headroom, total, 0.0), 1.0)
    out = {k: v * scale for k, v in dynamic.items()}
    out["total"] = total
    return out


def top_clock_power_w(c, seconds, flops, hbm_bytes, link_bytes):
    """Power of one device doing this work over ``seconds`` at the top clock, unclipped (idle,
    active floor and :func:`_dynamic`'s parts, summed as :func:`span_clock` sums them), W. Arrays,
    or Python numbers for one span."""
    d = _dynamic(c, seconds, flops, hbm_bytes, link_bytes, clip=False)
    return c["idle_w"] + c["active_w"] + d["matrix"] + d["memory"] + d["link"] + 0.0


def _top_clock(c, full_s, flops, hbm_bytes, link_bytes, vector_ops=0.0, gap_seconds=None):
    """A span's dynamic parts at the top clock (:func:`_dynamic`, clipped where the limit does not
    lower the clock) and its power there, W: ``(parts, uncapped)``, the power :func:`solve_clock`
    holds against the cap (its host gaps at :func:`gap_floor`)."""
    d = _dynamic(c, full_s, flops, hbm_bytes, link_bytes, vector_ops, clip=not_clock_limited(c))
    idle, active = gap_floor(c, c["idle_w"], c["active_w"], full_s, gap_seconds)
    return d, idle + active + d["matrix"] + d["memory"] + d["link"] + d.get("vector", 0.0)


def span_clock(c, cap, span, flops, hbm_bytes, link_bytes, vector_ops=0.0, gap_seconds=None):
    """Clock of a span of work under a cap: ``(clock, fits)`` of :func:`solve_clock`.

    Parameters
    ----------
    c : dict
        Columns of :func:`device_power` plus ``voltage_floor``, ``min_clock_ghz``, ``clock_ghz``.
    cap : array_like or float
        Power cap, W: the lower of ``power_cap_w`` and ``tdp_w`` (:func:`board_cap`).
    span : tuple
        ``(full_s, compute_bound_s, memory_bound_s, memory_compute_s)`` at the top clock
        (:func:`clocked_seconds`).
    flops, hbm_bytes, link_bytes, vector_ops : array_like or float
        Work of one device in the span. PIM stacks have their own budget and do not count.
    gap_seconds : array_like or float, optional
        Host time in the span, drawn at ``host_gap_w`` (:func:`gap_floor`).

    Arrays, or Python numbers for one span (the serving simulator's iterations). The power at the
    top clock is what the work draws there, unclipped (:func:`device_power` with ``clock`` 1, to the
    last bit); where it passes the cap the clock drops until it no longer does.
    """
    d, uncapped = _top_clock(c, span[0], flops, hbm_bytes, link_bytes, vector_ops, gap_seconds)
    return solve_clock(*_clock_problem(c, cap, span, d, uncapped, gap_seconds))


def _clock_problem(c, cap, span, d, uncapped, gap_seconds=None):
    """The arguments of :func:`solve_clock` for a span (``d``, ``uncapped``: :func:`_top_clock`'s; the
    floor split by :func:`gap_floor` at the host time ``gap_seconds``)."""
    idle, active = gap_floor(c, c["idle_w"], c["active_w"], span[0], gap_seconds)
    vector = d.get("vector", 0.0)
    lowest = c["min_clock_ghz"] / c["clock_ghz"]
    lowest = _ops(lowest).maximum(lowest, LOWEST_CLOCK)
    return cap, lowest, c["voltage_floor"], span, idle, active, d["matrix"] + vector, d["memory"] + d["link"], uncapped


def device_power(c, seconds, flops, hbm_bytes, link_bytes, vector_ops=0.0, pim_bytes=0.0, pim_link_bytes=0.0, *,
                 clock=None, full_seconds=None, gap_seconds=None):
    """Mean power of one device (W) over ``seconds`` doing the given work, by component.

    An NPU's vector engine adds ``vector_w`` at its full rate (``vector_ops`` over the span at
    ``vector_flops``); PIM adds its bank energy, ``pim_j_per_byte`` per byte read inside the banks
    (outside the device's TDP clip: the PIM memory has its own power budget), and the device's
    link energy per byte sent to PIM stacks.

    Parameters
    ----------
    c : dict
        Columns: ``idle_w``, ``active_w``, ``matrix_w``, ``tdp_w`` (W), ``peak_flops`` (FLOP/s at
        the run's dtype), ``memory_j_per_byte``, ``link_j_per_byte`` (J/B).
    seconds : array_like
        Length of the span, s.
    flops, hbm_bytes, link_bytes : array_like
        Work of one device in the span: FLOPs, device-memory bytes, bytes sent over the fabric.
    vector_ops, pim_bytes, pim_link_bytes : array_like, optional
        Vector-engine operations (NPU), bytes read inside PIM banks, bytes sent to PIM stacks.

    clock, full_seconds : array_like, optional
        A span run at clock ratio ``clock`` (the one :func:`board_cap` leaves it): ``seconds`` is its
        length at that clock, ``full_seconds`` at the top clock. The terms are those the work draws
        at the top clock, unclipped, scaled as in the module docstring (``voltage_floor`` column):
        the clock keeps them within the cap. Without ``clock`` the dynamic parts are clipped at TDP.
    gap_seconds : array_like, optional
        The part of ``seconds`` in which the device waits with no kernel running (the engine's host
        time it does not hide, the kernels' launch gaps): drawn at ``host_gap_w`` where the spec
        states it (:func:`host_gap_floor`), at the busy floor elsewhere.

    Returns
    -------
    dict
        ``power_w`` and one entry per component (``idle``, ``active``, ``matrix``, ``memory``,
        ``link``, ``vector``, ``pim``, W) that sum to it; the device's dynamic parts are scaled
        together where the sum passes TDP. Arrays, or Python numbers where every value and the
        columns read are Python numbers (the same operations, so the same values).

    Examples
    --------
    >>> c = dict(idle_w=60.0, active_w=60.0, matrix_w=300.0, tdp_w=400.0, peak_flops=3e14,
    ...          memory_j_per_byte=6e-11, link_j_per_byte=1e-11)
    >>> round(float(device_power(c, 1.0, 0.0, 1e12, 0.0)["power_w"]), 1)  # 1 TB/s of memory traffic
    180.0
    >>> round(float(device_power(c, 1.0, 3e14, 1e12, 0.0)["power_w"]), 1)  # full peak as well: at the limit
    400.0
    """
    span = seconds if clock is None else full_seconds
    xp = _ops(seconds, span, flops, hbm_bytes, link_bytes, vector_ops, pim_bytes, pim_link_bytes,
              *(v for v in (clock, gap_seconds) if v is not None))
    link = link_bytes + pim_link_bytes if xp is _Numbers else np.add(link_bytes, pim_link_bytes)
    dynamic = _dynamic(c, span, flops, hbm_bytes, link, vector_ops,
                       clip=True if clock is None else not_clock_limited(c))
    total = dynamic.pop("total")
    parts = {"idle": c["idle_w"] + 0.0 * total, "active": c["active_w"] + 0.0 * total}
    parts.update(dynamic)
    parts.setdefault("vector", 0.0 * total)
    if clock is not None:
        rate = xp.divide(span, seconds, 1.0)
        a, e, b = _factors(xp.maximum, clock if xp is _Numbers else np.asarray(clock, dtype=float),
                           c["voltage_floor"], rate)
        parts["active"] = parts["active"] * a
        for key, factor in (("matrix", e), ("vector", e), ("memory", b), ("link", b)):
            parts[key] = parts[key] * factor
    if gap_seconds is not None:
        parts["active"] = host_gap_floor(c, parts["active"], span, gap_seconds)
    parts["pim"] = c.get("pim_j_per_byte", 0.0) * xp.per_second(pim_bytes, seconds) + 0.0 * total
    parts["power_w"] = sum(parts[k] for k in COMPONENTS)
    return parts


def host_gap_floor(c, active, seconds, gap_seconds):
    """The active floor of a span of ``seconds`` of which ``gap_seconds`` the device spends waiting
    for the host, no kernel running (W, arrays): ``active`` (the floor while kernels run, clock
    factor applied) over the rest, and ``host_gap_w - idle_w`` over the gap. Between kernels the
    board stays at its top performance state with a context, its engines clock-gated: it draws
    more than a bare idle board and less than the busy floor. Where ``host_gap_w`` is NaN (no
    measurement) the gap keeps the busy floor, exactly ``active``.

    Examples
    --------
    >>> c = dict(idle_w=75.0, host_gap_w=142.5)
    >>> float(host_gap_floor(c, 200.0, 10.0, 4.0))  # 6 s at 200 W and 4 s at 67.5 W over idle
    147.0
    """
    idle, busy = gap_floor(c, c["idle_w"], active, seconds, gap_seconds)
    return busy + (idle - c["idle_w"])


def gap_floor(c, idle, active, full_s, gap_seconds):
    """The floor of a span of ``full_s`` seconds (at the top clock) of which ``gap_seconds`` wait on the
    host, as two terms: ``(constant, busy)``, W. ``constant`` is ``idle`` plus ``host_gap_w - idle_w``
    over the gap's share (it does not scale with the clock); ``busy`` is ``active`` over the rest
    (scaled with the clock as the active floor is, :func:`perfsim.cost.clock.solve_clock`). Exactly
    ``(idle, active)`` where ``host_gap_w`` is NaN or there is no gap. Arrays, or Python numbers for one
    span (the serving simulator's iterations)."""
    if gap_seconds is None:
        return idle, active
    gap_w = c.get("host_gap_w", np.nan)
    xp = _ops(full_s, gap_seconds, gap_w, idle, active)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = xp.clip(xp.divide(gap_seconds, full_s, 0.0), 0.0, 1.0)
    use = (gap_w == gap_w) & (share > 0)
    return xp.where(use, idle + (gap_w - c["idle_w"]) * share, idle), xp.where(use, active * (1.0 - share), active)


def board_cap(c):
    """The power a device may draw, W: ``power_cap_w`` where a plan sets one below the board limit,
    else ``tdp_w``. The board limit is itself a cap: the driver's power controller lowers the clock
    below the one asked for while the board draws more than its limit (NVML API reference,
    ``nvmlClocksThrottleReasonSwPowerCap``: "SW Power Scaling algorithm is reducing the clocks below
    requested clocks because the GPU is consuming too much power"), so a span whose work would draw
    more at the top clock runs at the highest clock that stays within the limit.

    That holds for GPUs (``main_kind`` gpu), whose ``tdp_w`` is the board's enforced power limit.
    The TPU and NPU specs' ``tdp_w`` is a measured maximum or an assumption, with no published
    clock controller behind it: there the dynamic power is clipped at it (:func:`device_power`)
    and only a plan's cap lowers the clock."""
    cap = floats(c["power_cap_w"])
    return np.fmin(where_one(np.isnan(cap), np.inf, cap), where_one(not_clock_limited(c), np.inf, c["tdp_w"]))


def not_clock_limited(c):
    """Where the board limit does not lower the clock (:func:`board_cap`): True for TPU and NPU rows,
    whose dynamic power is clipped at ``tdp_w`` instead. A bool, or a bool array over rows."""
    kind = c.get("main_kind", _GPU)
    return kind != _GPU if kind.__class__ is float or kind.__class__ is int else numeric(kind) != _GPU


def cap_span(c, full_s, compute_bound_s, memory_bound_s, memory_compute_s, flops, hbm_bytes, link_bytes,
             vector_ops=0.0, gap_seconds=None):
    """A span of work under the device's power limit (:func:`board_cap`: ``power_cap_w`` or
    ``tdp_w``): ``(clock, seconds, fits)``, arrays.

    Parameters
    ----------
    c : dict
        Columns, with ``power_cap_w`` (NaN: none, the board limit ``tdp_w`` holds), ``voltage_floor``,
        ``min_clock_ghz``, ``clock_ghz`` and those of :func:`device_power`.
    full_s, compute_bound_s, memory_bound_s, memory_compute_s : array_like
        The span at the top clock, s, and its parts (:func:`clocked_seconds`).
    flops, hbm_bytes, link_bytes, vector_ops : array_like
        Work of one device in the span (as :func:`device_power`).

    Returns
    -------
    (clock, seconds, fits)
        Clock ratio (exactly 1 where the limit does not bind), the span's length at that clock
        (exactly ``full_s`` there), and False where the cap is below the device's power at its
        lowest clock. PIM stacks have their own power budget and do not count.

    Examples
    --------
    >>> import numpy as np
    >>> c = dict(idle_w=60.0, active_w=60.0, matrix_w=300.0, tdp_w=400.0, peak_flops=3e14, memory_j_per_byte=6e-11,
    ...          link_j_per_byte=1e-11, voltage_floor=0.8, min_clock_ghz=0.2, clock_ghz=2.0,
    ...          power_cap_w=np.array([np.nan, 500.0, 300.0, 70.0]))
    >>> clock, seconds, fits = cap_span(c, 1.0, 0.9, 0.1, 0.0, 2.7e14, 1e11, 0.0)
    >>> clock.round(3).tolist(), seconds.round(3).tolist(), fits.tolist()
    ([1.0, 1.0, 0.89, 0.1], [1.0, 1.0, 1.111, 9.1], [True, True, True, False])
    """
    full_s = np.asarray(full_s, dtype=float)
    cap = board_cap(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        return span_under_cap(c, cap, full_s, compute_bound_s, memory_bound_s, memory_compute_s, flops, hbm_bytes,
                              link_bytes, vector_ops, gap_seconds)


def span_under_cap(c, cap, full_s, compute_bound_s, memory_bound_s, memory_compute_s, flops, hbm_bytes, link_bytes,
                   vector_ops=0.0, gap_seconds=None):
    """A span of work at the clock ``cap`` leaves it: ``(clock, seconds, fits)`` as :func:`cap_span`
    gives them, for a cap given directly (``inf``: none). The parts are clipped (:func:`clip_span`).
    Arrays, or Python numbers for one span (the serving simulator's iterations)."""
    span = clip_span(full_s, compute_bound_s, memory_bound_s, memory_compute_s)
    clock, fits = span_clock(c, cap, span, flops, hbm_bytes, link_bytes, vector_ops, gap_seconds)
    return clock, _ops(clock).where(clock < 1.0, clocked_seconds(clock, *span), full_s), fits


def cap_check(c, fits, what, cap=None):
    """The infeasibility check of a cap the device cannot meet at its lowest clock (``cap``: the
    device's :func:`board_cap`, where already known)."""
    detail = Detail(f"power_cap_w ({{:g}} W) is below what the device draws in {what} even at its lowest clock",
                    board_cap(c) if cap is None else cap)
    return (~np.asarray(fits, dtype=bool), f"power_cap_w is below the device's power at its lowest clock ({what})",
            detail)


def cap_passes(c, passes: dict, devices_per_pass=1.0, together=False):
    """Apply the device's power limit (:func:`board_cap`: ``power_cap_w`` or ``tdp_w``) to priced
    passes in place; returns the infeasibility checks.

    Each pass (a :func:`perfsim.cost.price.price` dict of one replica: ``total_s``,
    ``compute_bound_s``, ``flops``, ``hbm_bytes``, ``link_bytes``) runs at its own clock: its
    ``total_s`` becomes the length at that clock and it gains ``clock_ratio`` and ``throttle_s`` (the
    time the lower clock adds). ``devices_per_pass`` shares a pass's work among the devices that run
    it one after another (pipeline stages). A pass whose power at the top clock stays within the
    limit keeps its length exactly. ``together`` (every column and value one number) solves the
    passes in one call on an axis of passes.
    """
    spans = [[p["total_s"], p["compute_bound_s"], p["memory_bound_s"], p.get("memory_compute_s", 0.0),
              *(p.get(k, 0.0) for k in ("flops", "hbm_bytes", "link_bytes", "vector_ops")),
              p.get("overhead_s", 0.0) + p.get("launch_s", 0.0) / devices_per_pass] for p in passes.values()]
    cap = board_cap(c)
    solved = _one_configuration(c, cap, spans, devices_per_pass) if together else None
    if solved is None and together:
        both = [np.array(v, dtype=float) for v in zip(*spans, strict=True)]
        solved = list(zip(*cap_span(c, *both[:4], *(w / devices_per_pass for w in both[4:8]), both[8]), strict=True))
    elif solved is None:
        solved = _passes_under_cap(c, cap, [(s[:4], [np.asarray(w) / devices_per_pass for w in s[4:8]], s[8])
                                            for s in spans])
    checks = []
    for (name, p), (clock, seconds, fits) in zip(passes.items(), solved, strict=True):
        p["throttle_s"] = seconds - p["total_s"]
        p["total_s"] = seconds
        p["clock_ratio"] = clock
        checks.append(cap_check(c, fits, name, cap))
    return checks


def _one_configuration(c, cap, spans, devices_per_pass):
    """:func:`cap_span` of the passes of one configuration (every column and value one number) on
    Python numbers: what the solve on an axis of passes gives, to the bit (the same operations; it
    solves a few spans on Python numbers too). The power at the top clock is held against ``cap``
    as :func:`solve_clock` holds it; a pass within it keeps clock 1 and its length. None where a
    value is an array, a pass does vector-engine work or a pass the cap binds on has a value that is
    not finite (the solve on arrays then)."""
    if any(getattr(v, "ndim", 0) for s in spans for v in s):  # (numbers and NumPy values: np.ndim's answer)
        return None
    cap = float(cap)
    kept = [(np.float64(1.0), np.float64(s[0]), np.True_) for s in spans]  # the solve at the top clock
    if cap == np.inf:  # no cap, and a limit that does not lower the clock: nothing binds
        return kept
    keys = ("idle_w", "active_w", "matrix_w", "peak_flops", "memory_j_per_byte", "link_j_per_byte", "tdp_w",
            "min_clock_ghz", "clock_ghz", "voltage_floor")
    cols = {k: float(c[k]) for k in keys}
    if not all(math.isfinite(v) for v in cols.values()):
        return None
    cols["main_kind"] = float(c.get("main_kind", _GPU))
    cols["host_gap_w"] = float(c.get("host_gap_w", np.nan))
    share = float(devices_per_pass)
    for i, s in enumerate(spans):
        if float(s[7]) != 0.0:  # vector-engine work (NPU)
            return None
        full_s = float(s[0])
        gap = float(s[8])
        d, uncapped = _top_clock(cols, full_s, *(float(w) / share for w in s[4:7]), gap_seconds=gap)
        if not uncapped > cap * (1.0 + CAP_TOLERANCE):
            continue
        span = clip_span(full_s, *(float(x) for x in s[1:4]))
        problem = _clock_problem(cols, cap, span, d, uncapped, gap)
        if not np.isfinite([*problem[:3], *span, *problem[4:]]).all():
            return None
        clock, fits = solve_clock(*problem)
        kept[i] = (np.float64(clock), np.float64(clocked_seconds(clock, *span) if clock < 1.0 else full_s),
                   np.bool_(fits))
    return kept


def _passes_under_cap(c, cap, passes):
    """:func:`cap_span` of passes on arrays under ``cap`` (the device's :func:`board_cap`), each a triple
    ``(span, work, host time)``; the clocks of those the cap binds on are solved together (:func:`solve_clocks`).
    Where no row of a pass draws more than the cap at the top clock its solve is skipped: its clock is
    1 and its length the span's on every row (the same arrays, shapes included, as the solve returns
    there)."""
    out, spans, problems = [], {}, []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, (span, work, gap) in enumerate(passes):
            full_s = np.asarray(span[0], dtype=float)
            d, uncapped = _top_clock(c, full_s, *work, gap_seconds=gap)
            binds = uncapped > cap * (1.0 + CAP_TOLERANCE)
            if any_row(binds) or not binds.size:
                spans[i] = clip_span(full_s, *span[1:])
                problems.append(_clock_problem(c, cap, spans[i], d, uncapped, gap))
                out.append(None)
                continue
            shape = binds.shape
            seconds = np.array(np.broadcast_to(full_s, np.broadcast_shapes(shape, *(np.shape(x) for x in span))))
            out.append((np.asarray(1.0), seconds, np.asarray(True)) if not shape else
                       (np.ones(shape), seconds, np.ones(shape, dtype=bool)))
        for i, (clock, fits) in zip(spans, solve_clocks(problems), strict=True):
            span = spans[i]
            out[i] = clock, _ops(clock).where(clock < 1.0, clocked_seconds(clock, *span), span[0]), fits
    return out
