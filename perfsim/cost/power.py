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

**Power caps and DVFS.** Under its cap (:func:`board_cap`: ``power_cap_w`` where a plan sets one
below the board limit, else ``tdp_w``) the device lowers its clock to the ratio ``f`` of
its top clock (``f`` in ``[min_clock_ghz / clock_ghz, 1]``). Compute-bound time (the roofline's
compute-bound part, ``compute_bound_s``) stretches by ``1 / f``; a memory-bound op's compute
side stretches and its memory stall past it stays (:func:`clocked_seconds`); communication and
host overheads stay (HBM and links keep their own clocks). The supply voltage
tracks the clock above a floor and stays at the floor below, ``V(f) / V(1) = max(f,
voltage_floor)``, as GPU V/f tables do (Guerreiro et al., HPCA'18, "GPGPU Power Modeling for
Multi-Domain Voltage-Frequency Scaling": core voltage constant up to a knee, then rising with the
clock). Dynamic power of clocked logic is ``C V² f`` (Weste and Harris, "CMOS VLSI Design", sec.
5.1), so over a span whose work is fixed

    P(f) = idle_w + active_w · f V² + s · [(matrix + vector) · V² + memory + link] · T(1) / T(f),

the engines' energy per FLOP scaling with ``V²`` and the memory and link energy per byte not at
all (``s`` is 1 here; a span priced without a clock has its dynamic part scaled by ``s`` so that
it stays within TDP). ``P`` rises with ``f``; the largest ``f`` with ``P(f) <= cap`` is found by
bisection on the arrays
(:func:`solve_clock`), per phase: the prefill, a decode step, a training step. A cap at or above
the uncapped power changes nothing; one below ``P`` at the lowest clock cannot be met.

The servers' host power and wall energy are :mod:`perfsim.cost.wall`; the power and energy of a
whole run (a request batch, a training step or job) are composed in :mod:`perfsim.analytical.energy`.

Every function takes the column dict ``c`` (:mod:`perfsim.plan.columns`) and result arrays, and
returns arrays of the broadcast shape.
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.devices import KIND_NAMES
from perfsim.plan.rows import Detail, per_slice

#: ``main_kind`` of a GPU (:data:`perfsim.plan.devices.KIND_NAMES`): its board limit lowers the clock
_GPU = float(KIND_NAMES.index("gpu"))

COMPONENTS = ("idle", "active", "matrix", "memory", "link", "vector", "pim")


def per_second(amount, seconds):
    """``amount / seconds``: 0 where the span is empty, NaN where it is unknown (infeasible rows)."""
    seconds = np.asarray(seconds, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(seconds == 0, 0.0, np.asarray(amount, dtype=float) / seconds)


#: lowest clock ratio the solver tries where a spec states no lowest clock (a numerical floor, 1/1000
#: of the top clock: the cap may then slow the device almost without bound)
LOWEST_CLOCK = 1e-3
#: bisection steps: the clock ratio to 2**-24 of its range
_BISECTION_STEPS = 24
#: relative margin within which a cap counts as met at the top clock (rounding of sums in other orders)
CAP_TOLERANCE = 1e-12


class _Arrays:
    """The elementwise operations the formulas below are written with, on arrays."""

    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)
    clip = staticmethod(np.clip)
    per_second = staticmethod(per_second)

    @staticmethod
    def divide(a, b, fill):
        """``a / b``; ``fill`` where ``b`` is not above 0."""
        return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, fill), where=np.asarray(b) > 0)


class _Numbers:
    """The same operations on Python numbers, with the same values: the serving simulator prices
    its iterations one at a time, where a NumPy call would cost more than the arithmetic."""

    @staticmethod
    def maximum(a, b):
        return a if a > b else b

    @staticmethod
    def where(condition, a, b):
        return a if condition else b

    @staticmethod
    def clip(x, low, high):
        return min(max(x, low), high)

    @staticmethod
    def per_second(amount, seconds):
        return amount / seconds if seconds else 0.0

    @staticmethod
    def divide(a, b, fill):
        return a / b if b > 0 else fill


def _ops(*values):
    """:class:`_Numbers` where every value is a Python number, else :class:`_Arrays` (NumPy scalars too)."""
    for v in values:
        if v.__class__ is not float and v.__class__ is not int:
            return _Arrays
    return _Numbers


def voltage_ratio(clock, floor):
    """Supply voltage at clock ratio ``clock`` over the voltage at the top clock.

    The voltage tracks the clock above the floor and stays at the floor below it:
    ``max(clock, floor)``. Arrays broadcast; Python numbers give a Python number.

    Examples
    --------
    >>> voltage_ratio(0.9, 0.8), voltage_ratio(0.5, 0.8)
    (0.9, 0.8)
    """
    return _ops(clock, floor).maximum(clock, floor)


def clocked_seconds(clock, full_s, compute_bound_s, memory_bound_s=0.0, memory_compute_s=0.0):
    """Length of a span at clock ratio ``clock``.

    The compute-bound part stretches by ``1 / clock``. A memory-bound op takes its compute side,
    stretched, plus the memory stall beyond it, which the core clock does not change:
    ``memory_bound_s + memory_compute_s · (1 / clock - 1)`` (the stall-time model of DVFS: the
    core's cycles scale with the clock, the time waiting on memory past them does not; Keramidas,
    Spiliopoulos and Kaxiras, CF'10; Eyerman and Eeckhout, IEEE Trans. Computers 2010). It sums
    over ops, so the span's totals give it exactly, and an op on the roofline's ridge takes
    ``t / clock`` whichever side it is priced on: more bandwidth never lengthens a clocked span.
    The rest (communication, host overheads) stays.

    Parameters
    ----------
    clock : array_like or float
        Clock over the top clock, in (0, 1].
    full_s, compute_bound_s, memory_bound_s : array_like or float
        The span at the top clock, its compute-bound part and its memory-bound part, s.
    memory_compute_s : array_like or float
        Compute side of the memory-bound ops at the top clock, s (at most ``memory_bound_s``).

    Examples
    --------
    >>> clocked_seconds(0.5, 10.0, 4.0, 4.0, 1.0), clocked_seconds(0.2, 10.0, 4.0, 4.0, 1.0)
    (15.0, 30.0)
    """
    return _clocked(clock, full_s, compute_bound_s, memory_bound_s, memory_compute_s)


def _clocked(clock, full_s, compute_bound_s, memory_bound_s, memory_compute_s):
    """:func:`clocked_seconds` (arrays or Python numbers alike)."""
    return (compute_bound_s / clock + memory_compute_s * (1.0 / clock - 1.0)
            + (full_s - compute_bound_s))


def clip_span(full_s, compute_bound_s, memory_bound_s=0.0, memory_compute_s=0.0):
    """A span's parts for :func:`clocked_seconds`, each within what contains it (sums of parts
    priced separately, or interpolated, may pass it by rounding): ``(full_s, compute, memory,
    memory_compute)``. Arrays, or Python numbers for one span."""
    xp = _ops(full_s, compute_bound_s, memory_bound_s, memory_compute_s)
    compute = xp.clip(compute_bound_s, 0.0, full_s)
    memory = xp.clip(memory_bound_s, 0.0, full_s - compute)
    return full_s, compute, memory, xp.clip(memory_compute_s, 0.0, memory)


def _factors(maximum, clock, floor, rate):
    """Scale factors of the power terms at ``clock``: ``(active, clocked engines, bytes)``.

    ``rate`` is the work per second relative to the top clock (``T(1) / T(f)``): the active floor
    scales with ``f V²``, the engines' dynamic power with ``V²`` times the rate, energy per byte
    with the rate. ``maximum`` is that of :class:`_Arrays` or :class:`_Numbers`."""
    v = maximum(clock, floor)  # voltage_ratio
    v2 = v * v
    return clock * v2, v2 * rate, rate


def solve_clock(cap, lowest, floor, span, idle, active, clocked_w, bytes_w, uncapped_w, steps=_BISECTION_STEPS):
    """Largest clock ratio in ``[lowest, 1]`` at which a span's mean power is at most ``cap``.

    Bisection on the arrays (each row its own bracket, no per-row loop); Python numbers work the
    same way, one span at a time (the serving simulator's iterations).

    Parameters
    ----------
    cap : array_like or float
        Power cap, W (``inf``: none).
    lowest : array_like or float
        Lowest clock ratio of the device.
    floor : array_like or float
        Voltage floor over the top-clock voltage (:func:`voltage_ratio`).
    span : tuple
        ``(full_s, compute_bound_s, memory_bound_s, memory_compute_s)`` of the span at the top clock,
        s (:func:`clocked_seconds`).
    idle, active : array_like or float
        Idle power and the active floor at the top clock, W.
    clocked_w, bytes_w : array_like or float
        Dynamic power at the top clock of the clocked engines (matrix, vector)
        and of memory and link traffic, W.
    uncapped_w : array_like or float
        The span's power at the top clock, W (the cap binds only below it).

    Returns
    -------
    (clock, fits)
        The clock ratio (1 where the cap does not bind) and whether the cap can be met at all
        (False where even the lowest clock draws more; the clock is then ``lowest``).

    Examples
    --------
    >>> f, fits = solve_clock(300.0, 0.1, 0.8, (1.0, 1.0, 0.0, 0.0), 50.0, 50.0, 300.0, 0.0, 400.0)
    >>> round(f, 3), fits  # compute-bound (work per second ~ f): 50 + 50 f^3 + 300 f^3 = 300
    (0.894, True)
    """
    full_s = span[0]
    xp = _ops(cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w)
    maximum, where, divide = xp.maximum, xp.where, xp.divide

    def power(clock):
        rate = divide(full_s, _clocked(clock, *span), 1.0)
        a, e, b = _factors(maximum, clock, floor, rate)
        return idle + active * a + clocked_w * e + bytes_w * b

    binds = uncapped_w > cap * (1.0 + CAP_TOLERANCE)  # not where the cap equals the power but for rounding
    if xp is _Numbers and not binds:  # one span at the top clock: what the bisection below would give
        return 1.0, True
    if xp is not _Numbers and np.ndim(binds) == 0:  # one span as NumPy scalars (a single estimate): Python
        # numbers give the same clock and fit where every value is finite, without a NumPy call per step
        values = [float(v) for v in (cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w)]
        if not binds:
            return np.asarray(1.0), np.asarray(True)
        if np.isfinite(values).all():
            clock, fits = solve_clock(*values[:3], tuple(values[3:7]), *values[7:], steps=steps)
            return np.asarray(clock), np.asarray(fits)
    if xp is not _Numbers and np.ndim(binds) == 1 and binds.size <= 4 and binds.any():  # a few spans: each so
        rows = [np.broadcast_to(np.asarray(v, dtype=float), binds.shape).tolist()
                for v in (cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w)]
        if np.isfinite(rows).all():
            solved = [solve_clock(*v[:3], v[3:7], *v[7:], steps=steps) for v in zip(*rows, strict=True)]
            return np.array([f for f, _ in solved]), np.array([ok for _, ok in solved])
    # a box of a sweep with rows the cap binds: each solved once along the axes its inputs repeat on
    if xp is not _Numbers and np.ndim(binds) > 1 and binds.any():
        solved = per_slice(np.shape(binds), (cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w),
                           lambda *x: solve_clock(*x[:3], x[3:7], *x[7:], steps=steps))
        if solved is not None:
            return solved
    if xp is not _Numbers and np.ndim(binds) and not np.all(binds):
        # rows at the top clock need no search: solve the others alone (each row is its own bracket,
        # so the same clocks as searching every row)
        shape = np.shape(binds)
        if not np.any(binds):
            return np.ones(shape), np.ones(shape, dtype=bool)
        rows = np.nonzero(np.ravel(binds))[0]

        def part(x):
            return np.ravel(np.broadcast_to(np.asarray(x, dtype=float), shape))[rows]

        clock, fits = solve_clock(*(part(x) for x in (cap, lowest, floor)), tuple(part(x) for x in span),
                                  *(part(x) for x in (idle, active, clocked_w, bytes_w, uncapped_w)), steps=steps)
        out, ok = np.ones(np.size(binds)), np.ones(np.size(binds), dtype=bool)
        out[rows], ok[rows] = clock, fits
        return out.reshape(shape), ok.reshape(shape)
    fits = where(binds, power(lowest) <= cap, True)
    lo = lowest + 0.0 * uncapped_w
    hi = 1.0 + 0.0 * lo
    for _ in range(steps):  # the same steps on every row at once
        mid = 0.5 * (lo + hi)
        ok = power(mid) <= cap
        lo = where(ok, mid, lo)
        hi = where(ok, hi, mid)
    return where(binds, lo, 1.0), fits


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
    if vector_ops > 0 if xp is _Numbers else (np.asarray(vector_ops) > 0).any():
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


def span_clock(c, cap, span, flops, hbm_bytes, link_bytes, vector_ops=0.0):
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

    Arrays, or Python numbers for one span (the serving simulator's iterations). The power at the
    top clock is what the work draws there, unclipped (:func:`device_power` with ``clock`` 1, to the
    last bit); where it passes the cap the clock drops until it no longer does.
    """
    d = _dynamic(c, span[0], flops, hbm_bytes, link_bytes, vector_ops, clip=not_clock_limited(c))
    idle, active = c["idle_w"], c["active_w"]
    vector = d.get("vector", 0.0)
    uncapped = idle + active + d["matrix"] + d["memory"] + d["link"] + vector
    lowest = c["min_clock_ghz"] / c["clock_ghz"]
    lowest = _ops(lowest).maximum(lowest, LOWEST_CLOCK)
    return solve_clock(cap, lowest, c["voltage_floor"], span, idle, active, d["matrix"] + vector,
                       d["memory"] + d["link"], uncapped)


def device_power(c, seconds, flops, hbm_bytes, link_bytes, vector_ops=0.0, pim_bytes=0.0, pim_link_bytes=0.0, *,
                 clock=None, full_seconds=None):
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

    Returns
    -------
    dict
        ``power_w`` and one entry per component (``idle``, ``active``, ``matrix``, ``memory``,
        ``link``, ``vector``, ``pim``, W) that sum to it; the device's dynamic parts are scaled
        together where the sum passes TDP.

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
    dynamic = _dynamic(c, span, flops, hbm_bytes, np.add(link_bytes, pim_link_bytes), vector_ops,
                       clip=True if clock is None else not_clock_limited(c))
    total = dynamic.pop("total")
    parts = {"idle": c["idle_w"] + 0.0 * total, "active": c["active_w"] + 0.0 * total}
    parts.update(dynamic)
    parts.setdefault("vector", 0.0 * total)
    if clock is not None:
        rate = _Arrays.divide(span, seconds, 1.0)
        a, e, b = _factors(np.maximum, np.asarray(clock, dtype=float), c["voltage_floor"], rate)
        parts["active"] = parts["active"] * a
        for key, factor in (("matrix", e), ("vector", e), ("memory", b), ("link", b)):
            parts[key] = parts[key] * factor
    parts["pim"] = c.get("pim_j_per_byte", 0.0) * per_second(pim_bytes, seconds) + 0.0 * total
    parts["power_w"] = sum(parts[k] for k in COMPONENTS)
    return parts


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
    cap = np.asarray(c["power_cap_w"], dtype=float)
    return np.fmin(np.where(np.isnan(cap), np.inf, cap), np.where(not_clock_limited(c), np.inf, c["tdp_w"]))


def not_clock_limited(c):
    """Where the board limit does not lower the clock (:func:`board_cap`): True for TPU and NPU rows,
    whose dynamic power is clipped at ``tdp_w`` instead. A bool, or a bool array over rows."""
    kind = c.get("main_kind", _GPU)
    return kind != _GPU if kind.__class__ is float or kind.__class__ is int else np.asarray(kind) != _GPU


def cap_span(c, full_s, compute_bound_s, memory_bound_s, memory_compute_s, flops, hbm_bytes, link_bytes,
             vector_ops=0.0):
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
                              link_bytes, vector_ops)


def span_under_cap(c, cap, full_s, compute_bound_s, memory_bound_s, memory_compute_s, flops, hbm_bytes, link_bytes,
                   vector_ops=0.0):
    """A span of work at the clock ``cap`` leaves it: ``(clock, seconds, fits)`` as :func:`cap_span`
    gives them, for a cap given directly (``inf``: none). The parts are clipped (:func:`clip_span`).
    Arrays, or Python numbers for one span (the serving simulator's iterations)."""
    span = clip_span(full_s, compute_bound_s, memory_bound_s, memory_compute_s)
    clock, fits = span_clock(c, cap, span, flops, hbm_bytes, link_bytes, vector_ops)
    return clock, _ops(clock).where(clock < 1.0, clocked_seconds(clock, *span), full_s), fits


def cap_check(c, fits, what):
    """The infeasibility check of a cap the device cannot meet at its lowest clock."""
    detail = Detail(f"power_cap_w ({{:g}} W) is below what the device draws in {what} even at its lowest clock",
                    board_cap(c))
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
              *(p.get(k, 0.0) for k in ("flops", "hbm_bytes", "link_bytes", "vector_ops"))] for p in passes.values()]
    if together:
        both = [np.array(v, dtype=float) for v in zip(*spans, strict=True)]
        solved = list(zip(*cap_span(c, *both[:4], *(w / devices_per_pass for w in both[4:])), strict=True))
    else:
        solved = [cap_span(c, *s[:4], *(np.asarray(w) / devices_per_pass for w in s[4:])) for s in spans]
    checks = []
    for (name, p), (clock, seconds, fits) in zip(passes.items(), solved, strict=True):
        p["throttle_s"] = seconds - p["total_s"]
        p["total_s"] = seconds
        p["clock_ratio"] = clock
        checks.append(cap_check(c, fits, name))
    return checks
