"""Power over time of a simulated serving cluster: per instance, summed per cluster, windowed.

Every iteration of an instance draws the power :func:`perfsim.cost.power.device_power`
gives for its work (the serving summary prices each iteration so); between iterations the
instance's devices draw ``idle_w``. The cluster's power is the sum over instances, a step
function of time; at the wall every server adds its host and loses its supplies' share, as
``power_w_per_node`` counts it. Power meters and power-capping controllers read averages over a
window (``nvidia-smi``'s ``power.draw`` is the mean over one second on Ampere and newer GPUs,
``nvidia-smi --help-query-gpu``), so the statistics are those of window means.

POLCA (Patel et al., ASPLOS'24, "Characterizing Power Management Opportunities for LLMs in the
Cloud") provisions a row of servers for the peak of such a series rather than for the servers'
nameplate power; :mod:`perfsim.explore.oversubscription` searches how many servers fit.
"""

from __future__ import annotations

import math

import numpy as np

_QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def cluster_series(instances, *, idle_w, devices, start_s, end_s):
    """Power of all devices as a step function: ``(times_s, power_w)``.

    Parameters
    ----------
    instances : list of (start_s, duration_s, power_w_per_device, devices_per_instance)
        Each instance's iterations (arrays) and its size.
    idle_w : float
        A device's power between iterations, W.
    devices : float
        Devices in the cluster (instances' devices; idle ones included in ``idle_w``).
    start_s, end_s : float
        The span of the run.

    Returns
    -------
    (times_s, power_w)
        Breakpoints (``start_s`` first, ``end_s`` last) and the power from each breakpoint to the
        next (the last entry repeats the one before).

    Examples
    --------
    >>> t, p = cluster_series([(np.array([1.0]), np.array([2.0]), np.array([300.0]), 2)], idle_w=50.0,
    ...                       devices=4, start_s=0.0, end_s=4.0)
    >>> t.tolist(), p.tolist()
    ([0.0, 1.0, 3.0, 4.0], [200.0, 700.0, 200.0, 200.0])
    """
    times = [np.array([start_s, end_s])]
    steps = [np.zeros(2)]
    for start, duration, power, size in instances:
        if not len(start):
            continue
        lift = size * (np.asarray(power, dtype=float) - idle_w)
        times += [start, start + duration]
        steps += [lift, -lift]
    t = np.concatenate(times)
    d = np.concatenate(steps)
    order = np.argsort(t, kind="stable")
    t, d = t[order], d[order]
    first = np.flatnonzero(np.concatenate(([True], t[1:] != t[:-1])))  # (t is sorted: np.unique's, no sort)
    edges = t[first]
    lifted = np.add.reduceat(d, first)
    power = devices * idle_w + np.cumsum(lifted)
    keep = (edges >= start_s) & (edges <= end_s)
    edges, power = edges[keep], power[keep]
    power[-1] = power[-2] if len(power) > 1 else power[-1]
    return edges, power


def window_means(times_s, power_w, window_s):
    """Means of a step function over consecutive windows of ``window_s`` from its first breakpoint
    (the last window may be shorter): ``(window_start_s, mean_w)``.

    Examples
    --------
    >>> window_means(np.array([0.0, 1.0, 3.0, 4.0]), np.array([200.0, 700.0, 200.0, 200.0]), 2.0)
    (array([0., 2.]), array([450., 450.]))
    """
    energy = np.concatenate([[0.0], np.cumsum(power_w[:-1] * np.diff(times_s))])
    start, end = float(times_s[0]), float(times_s[-1])
    n = max(math.ceil((end - start) / window_s - 1e-9), 1)
    edges = np.minimum(start + window_s * np.arange(n + 1), end)
    at = np.interp(edges, times_s, energy)
    lengths = np.diff(edges)
    means = np.divide(np.diff(at), lengths, out=np.full(n, float(power_w[0])), where=lengths > 0)
    return edges[:-1], means


def stats(values, instant=None):
    """``{mean, p50, p90, p99, max}`` of window means (``max_instant``: the step function's peak)."""
    values = np.asarray(values, dtype=float)
    out = {"mean": float(np.mean(values))}
    out.update({key: float(np.percentile(values, q)) for key, q in _QUANTILES})
    out["max"] = float(np.max(values))
    if instant is not None:
        out["max_instant"] = float(np.max(instant))
    return out


def wall_power(device_w, *, nodes, devices, devices_per_node, idle_w, host_w, psu_efficiency):
    """Servers' power at the wall for ``device_w`` drawn by the ``devices`` in use (arrays):
    the devices, the idle ones a partly filled node leaves, every server's host, over the supplies'
    efficiency (as :func:`perfsim.cost.power` counts ``power_w_per_node``)."""
    unused = nodes * devices_per_node - devices
    return (np.asarray(device_w, dtype=float) + unused * idle_w + nodes * host_w) / psu_efficiency
