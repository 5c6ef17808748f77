"""Clock of a span of work under a power cap: DVFS, the clocked length of a span, the clock solve.

The power model itself (the terms below at the top clock) is :mod:`perfsim.cost.power`.

**Power caps and DVFS.** Under its cap (:func:`perfsim.cost.power.board_cap`: ``power_cap_w`` where a plan
sets one below the board limit, else ``tdp_w``) the device lowers its clock to the ratio ``f`` of
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

Every function takes arrays, which broadcast, or Python numbers for one span (the serving
simulator's iterations).
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import any_row, first_slice, spread


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
    xp = _ops(cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w)
    if xp is _Numbers:
        binds = uncapped_w > cap * (1.0 + CAP_TOLERANCE)  # not where the cap equals the power but for rounding
        if not binds:  # one span at the top clock: what the bisection below would give
            return 1.0, True
        return _search(_Numbers, cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w, binds,
                       steps=steps)
    return solve_clocks([(cap, lowest, floor, span, idle, active, clocked_w, bytes_w, uncapped_w)], steps)[0]


def solve_clocks(problems, steps=_BISECTION_STEPS):
    """:func:`solve_clock` of several spans on arrays, each given as the tuple of its arguments: a list
    of ``(clock, fits)``.

    Each is reduced alone (rows at the top clock, the axes its inputs repeat on); the rows left to
    search, where each span leaves a 1-d array of them, are searched in one bisection on the arrays
    joined end to end. Each row is its own bracket, so the clocks are those of searching each span
    alone, with one NumPy call per step for all of them."""
    out, pending = [None] * len(problems), []
    for i, problem in enumerate(problems):
        search = _reduce(*problem, steps=steps)
        try:
            pending.append((i, search, next(search)))
        except StopIteration as done:
            out[i] = done.value
    rows = [q for _, _, q in pending]
    if len(rows) > 1 and all(isinstance(x, np.ndarray) and x.ndim == 1 and x.shape == q[-1].shape
                             for q in rows for x in q):
        joined = _search(_Arrays, *(np.concatenate(x) for x in zip(*rows, strict=True)), steps=steps)
        cuts = np.cumsum([q[-1].size for q in rows])[:-1]
        found = list(zip(*(np.split(x, cuts) for x in joined), strict=True))
    else:
        found = [_search(_Arrays, *q, steps=steps) for q in rows]
    for (i, search, _), result in zip(pending, found, strict=True):
        try:
            search.send(result)
        except StopIteration as done:
            out[i] = done.value
    return out


def _reduce(cap, lowest, floor, span, idle, active, clocked_w, bytes_w, uncapped_w, steps):
    """:func:`solve_clock` on arrays, as a generator: returns ``(clock, fits)``, having yielded at most
    once the arguments of the bisection left to run (:func:`_search`) and been sent its result."""
    args = (cap, lowest, floor, *span, idle, active, clocked_w, bytes_w, uncapped_w)
    binds = uncapped_w > cap * (1.0 + CAP_TOLERANCE)  # not where the cap equals the power but for rounding
    if np.ndim(binds) == 0:  # one span as NumPy scalars (a single estimate): Python numbers give the same
        # clock and fit where every value is finite, without a NumPy call per step
        values = [float(v) for v in args]
        if not binds:
            return np.asarray(1.0), np.asarray(True)
        if np.isfinite(values).all():
            clock, fits = solve_clock(*values[:3], tuple(values[3:7]), *values[7:], steps=steps)
            return np.asarray(clock), np.asarray(fits)
    if np.ndim(binds) == 1 and binds.size <= 4 and any_row(binds):  # a few spans: each so
        rows = [_listed(v, binds.shape) for v in args]
        if np.isfinite(rows).all():
            solved = [solve_clock(*v[:3], v[3:7], *v[7:], steps=steps) for v in zip(*rows, strict=True)]
            return np.array([f for f, _ in solved]), np.array([ok for _, ok in solved])
    # a box of a sweep with rows the cap binds: each solved once along the axes its inputs repeat on
    if np.ndim(binds) > 1 and any_row(binds):
        x = first_slice(np.shape(binds), args)
        if x is not None:
            return spread(np.shape(binds), (yield from _reduce(*x[:3], x[3:7], *x[7:], steps=steps)))
    if np.ndim(binds) and not np.all(binds):
        # rows at the top clock need no search: solve the others alone (each row is its own bracket,
        # so the same clocks as searching every row)
        shape = np.shape(binds)
        if not any_row(binds):
            return np.ones(shape), np.ones(shape, dtype=bool)
        rows = np.nonzero(np.ravel(binds))[0]
        x = [np.ravel(np.broadcast_to(np.asarray(v, dtype=float), shape))[rows] for v in args]
        clock, fits = yield from _reduce(*x[:3], x[3:7], *x[7:], steps=steps)
        out, ok = np.ones(np.size(binds)), np.ones(np.size(binds), dtype=bool)
        out[rows], ok[rows] = clock, fits
        return out.reshape(shape), ok.reshape(shape)
    return (yield (*args, binds))


def _listed(value, shape):
    """``value`` broadcast to the 1-D ``shape``, as a list of Python floats (a number repeated without
    building the broadcast array)."""
    value = np.asarray(value, dtype=float)
    if value.shape == shape:
        return value.tolist()
    if not value.ndim:
        return [value.item()] * shape[0]
    return np.broadcast_to(value, shape).tolist()


def _search(xp, cap, lowest, floor, full_s, compute_bound_s, memory_bound_s, memory_compute_s, idle, active,
            clocked_w, bytes_w, uncapped_w, binds, steps):
    """The bisection of :func:`solve_clock` (``binds``: where the cap binds), with the operations of
    ``xp`` (:class:`_Arrays` or :class:`_Numbers`): ``(clock, fits)``."""
    maximum, where, divide = xp.maximum, xp.where, xp.divide
    span = (full_s, compute_bound_s, memory_bound_s, memory_compute_s)

    def power(clock):
        rate = divide(full_s, _clocked(clock, *span), 1.0)
        a, e, b = _factors(maximum, clock, floor, rate)
        return idle + active * a + clocked_w * e + bytes_w * b

    fits = where(binds, power(lowest) <= cap, True)
    lo = lowest + 0.0 * uncapped_w
    hi = 1.0 + 0.0 * lo
    for _ in range(steps):  # the same steps on every row at once
        mid = 0.5 * (lo + hi)
        ok = power(mid) <= cap
        lo = where(ok, mid, lo)
        hi = where(ok, hi, mid)
    return where(binds, lo, 1.0), fits
