"""An inference engine's host time per iteration, and how much of it runs under the device's kernels.

Each iteration an engine spends host time ``h`` (the runtime's ``step_overhead_ms`` plus
``host_per_seq_us`` per sequence: scheduling, input preparation, sampling bookkeeping, output
processing). An engine that finishes that work before it launches the iteration's kernels leaves
the device waiting through all of it: the iteration takes ``d + h`` for device time ``d``. An
engine that prepares iteration ``i + 1`` while the device still runs iteration ``i`` (vLLM's async
scheduling, which schedules one step ahead and keeps the sampled tokens on the device, so that its
input preparation needs no wait on the previous step) hides that work under the kernels. The
runtime's ``host_overlap`` ``f`` is the share of ``h`` that can run so; the rest stays serial:

    iteration = d + (1 - f) h + max(f h - d, 0) = max(d + (1 - f) h, h)

``f = 0`` gives ``d + h``, ``f = 1`` gives ``max(d, h)``: the device or the host, whichever is slower,
sets the pace. The device waits with no kernel running for the host time it does not hide,
``(1 - f) h + max(f h - d, 0)`` (drawn at ``host_gap_w``: :func:`perfsim.cost.power.host_gap_floor`);
hidden host time is no gap. Under a power cap the part left exposed at the top clock is kept as
the clock stretches the kernels (a bound: a slower device hides a little more of a host-bound step).
"""

from __future__ import annotations

import numpy as np


def hidden_host(serial_s, host_s, overlap):
    """Host time of an iteration that runs under its kernels, s: ``min(f h, d)``.

    Parameters
    ----------
    serial_s : array_like or float
        The iteration priced with its host time serial: device time ``d`` plus ``host_s``.
    host_s : array_like or float
        The engine's host time in the iteration, ``h``.
    overlap : array_like or float
        The runtime's ``host_overlap``, ``f`` in [0, 1].

    Returns
    -------
    The hidden time, taken off ``serial_s`` (the iteration's length) and off ``host_s`` (the
    device's wait). Exactly 0 where ``f`` is 0, so that both are then unchanged bit for bit.
    Arrays, or Python numbers for numbers.

    Examples
    --------
    >>> hidden_host(12.0, 2.0, 1.0)  # 10 of device time hide 2 of host: max(10, 2) = 12 - 2
    2.0
    >>> hidden_host(3.0, 2.0, 1.0)  # 1 of device time hides 1 of 2: max(1, 2) = 3 - 1
    1.0
    >>> hidden_host(12.0, 2.0, 0.0)
    0.0
    """
    hidden = overlap * host_s
    device = serial_s - host_s
    if hidden.__class__ is np.ndarray or device.__class__ is np.ndarray:
        return np.fmin(hidden, device)  # (a row without a price, NaN, hides nothing)
    return min(hidden, device)


def hidden_decode_base(base, decode, width, host_s, overlap):
    """The serving simulator's decode iterations by batch size ``n`` with their host time hidden:
    ``base[n]`` (host, token and LM-head time, the host serial) less ``f h(n)`` (``h(n)``:
    ``host_s(n, 0.0)``), where every decode iteration of ``n >= 1`` sequences hides all of it (its least
    device time, at the shortest context of the decode-attention table ``decode``, row ``n`` of
    ``width`` entries, is at least ``f h(n)``): a list; ``base`` itself where ``f`` is 0; None where
    some iteration does not hide it (each is then priced on its own). A row of that table is linear
    between its entries, so its least value is at one of them."""
    if not overlap:
        return base
    host = host_s(np.arange(len(base), dtype=float), 0.0)
    least = np.asarray(base) - host + np.asarray(decode, dtype=float).reshape(-1, width)[:len(base)].min(axis=1)
    return None if np.any(overlap * host[1:] > least[1:]) else (np.asarray(base) - overlap * host).tolist()
