"""Servers at the wall: the host's floor, its parts that draw with use, idle devices, power supplies.

A server at the wall (what MLPerf Power measures) adds its host — CPUs, memory, NICs, switches,
storage, fans (``host_w`` at full load; its parts that draw with use, ``cpu_w``, ``nvme_w`` and
``nic_w``, only for the time the plan keeps them busy: :func:`host_use`) — and idle devices the
run leaves unused in a partly filled node, all divided by the power supplies' efficiency
(``psu_efficiency``). ``pue`` (power usage
effectiveness, facility energy over IT energy; 1 by default) adds the facility's cooling and
power distribution to ``energy_wall_j`` (``breakdown.energy.facility_j``).

Every function takes the column dict ``c`` (:mod:`perfsim.plan.columns`) and arrays; for one
configuration, :func:`energy_keys` also takes finite Python numbers (``numbers``: the same operations
on numbers, so the same values).
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.cost.clock import _Arrays, _Numbers
from perfsim.cost.power import COMPONENTS, per_second

#: host components that draw with use: (part, spec column)
HOST_PARTS = (("cpu", "host_cpu_w"), ("nvme", "host_nvme_w"), ("nic", "host_nic_w"))
#: the columns :func:`energy_keys` reads (``wall_whole_node`` and ``pue`` where present; every divisor and
#: rate among them above 0 where it runs on numbers)
WALL_COLUMNS = ("num_devices", "devices_per_node", "idle_w", "host_w", "host_cpu_w", "host_nvme_w", "host_nic_w",
                "psu_efficiency", "nvme_bw", "scaleout_bw", "wall_whole_node", "pue")


def host_use(c, seconds, used, activity=None, numbers=False):
    """What one node's host parts that draw with use add over a span, J each: ``cpu``, ``nvme``, ``nic``.

    Each part draws its dynamic power (``cpu_w``, ``nvme_w``, ``nic_w`` of ``node.power``, the
    step from idle to full load) for the time it is busy: the host CPUs for ``host_cpu_s`` (the node's
    CPUs computing for the run's devices: the CPU Adam step, attention over a host-resident KV
    cache), the drives for the node's NVMe bytes at the node's NVMe bandwidth, each NIC for its
    device's ``nic_bytes`` at its line rate; none longer than the span.

    ``used`` is the devices the run uses on one node; ``activity`` holds ``host_cpu_s`` (node CPU
    seconds), ``nvme_bytes`` and ``nic_bytes`` (per device) over the span; none: nothing beyond
    the devices ran. ``numbers``: every value a finite Python number, the rates above 0 (:func:`energy_keys`).
    """
    activity = activity or {}

    def busy(amount, rate):
        if numbers:  # (the same value as below on finite numbers, the rate above 0)
            return min(amount / rate, seconds) if amount > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.asarray(amount) > 0, np.minimum(np.divide(amount, rate), seconds), 0.0)

    nvme = activity.get("nvme_bytes", 0.0)
    times = {"cpu": busy(activity.get("host_cpu_s", 0.0), 1.0),
             "nvme": busy(used * (nvme if numbers else np.asarray(nvme)), c["nvme_bw"]),
             "nic": busy(activity.get("nic_bytes", 0.0), c["scaleout_bw"])}
    return {part: c[column] * times[part] for part, column in HOST_PARTS}


def host_floor_w(c):
    """One node's host power with its CPUs, drives and NICs idle (W, DC side): ``host_w`` (the
    host at full load) less the parts that draw with use."""
    return c["host_w"] - sum(c[column] for _, column in HOST_PARTS)


def nameplate_w_per_node(c):
    """One server's nameplate power at the wall (W): ``devices_per_node`` devices at ``tdp_w`` and
    the host at full load (``host_w``), through the power supplies (``psu_efficiency``)."""
    return (c["devices_per_node"] * c["tdp_w"] + c["host_w"]) / c["psu_efficiency"]


def _wall(c, device_w, seconds, activity=None, numbers=False):
    """Servers at the wall: ``(power_w_per_node, energy_wall_j, host_j, psu_loss_j, unused_j, use_j)``,
    ``use_j`` the host parts' energy by part (all nodes). ``power_w_per_node`` is a whole server's
    draw; the energies are what the run is charged (``wall_energy``: its devices' share of the
    servers, or whole servers)."""
    devices = c["num_devices"]
    per_node = c["devices_per_node"]
    xp = _Numbers if numbers else _Arrays
    nodes = float(math.ceil(devices / per_node)) if numbers else np.ceil(devices / per_node)
    used = devices / nodes
    unused_w = (per_node - used) * c["idle_w"]
    use_j = host_use(c, seconds, used, activity, numbers)
    floor_w, use_w = host_floor_w(c), xp.per_second(sum(use_j.values()), seconds)
    dc_w = used * device_w + unused_w + floor_w + use_w
    node_w = dc_w / c["psu_efficiency"]
    # what the run is charged: the host parts it keeps busy, and its devices' share of each server's
    # idle host (the other devices' jobs pay the rest, as a shared server is billed), or whole
    # servers, idle devices included
    whole = c.get("wall_whole_node", 0.0) > 0 if numbers else np.asarray(c.get("wall_whole_node", 0.0)) > 0
    share = xp.where(whole, 1.0, used / per_node)
    charged_unused_w = xp.where(whole, unused_w, 0.0)
    charged_host_w = floor_w * share + use_w
    charged_dc_w = used * device_w + charged_unused_w + charged_host_w
    charged_w = charged_dc_w / c["psu_efficiency"]
    span = nodes * seconds
    return (node_w, charged_w * span, charged_host_w * span, (charged_w - charged_dc_w) * span,
            charged_unused_w * span, {part: nodes * j for part, j in use_j.items()})


def energy_keys(c, device_j, device_w, seconds, tokens, parts_j, activity=None, numbers=False):
    """The result keys shared by both modes, plus ``breakdown.energy.*`` (all devices, J).

    ``numbers``: ``c`` (the columns of :data:`WALL_COLUMNS`) and every value are finite Python numbers
    (one configuration): the keys are computed on numbers, the same operations as on arrays."""
    devices = c["num_devices"]
    node_w, wall_j, host_j, psu_j, unused_j, use_j = _wall(c, device_w, seconds, activity, numbers)
    energy = devices * device_j
    facility_j = (c.get("pue", 1.0) - 1.0) * wall_j
    out = {
        "power_w_per_device": device_w,
        "power_w_per_node": node_w,
        "energy_j": energy,
        "energy_wall_j": wall_j + facility_j,
        "energy_j_per_token": (_Numbers if numbers else _Arrays).divide(energy, tokens, np.nan),
    }
    for name in COMPONENTS:
        out[f"breakdown.energy.{name}_j"] = devices * parts_j[name]
    out["breakdown.energy.host_j"] = host_j
    for part, j in use_j.items():
        out[f"breakdown.energy.host_{part}_j"] = j + 0.0 * host_j
    out["breakdown.energy.unused_devices_j"] = unused_j
    out["breakdown.energy.psu_loss_j"] = psu_j
    out["breakdown.energy.facility_j"] = facility_j + 0.0 * wall_j
    return out


def run_energy(c, device_j, seconds, tokens, parts_j):
    """Power and energy keys of a run whose work was counted elsewhere (the serving simulator).

    Parameters
    ----------
    c : dict
        Columns (``num_devices``, ``devices_per_node``, ``idle_w``, ``host_w``, ``psu_efficiency``).
    device_j : array_like
        Energy of the mean device over the run, J.
    seconds : array_like
        Length of the run, s.
    tokens : array_like
        Tokens the energy is shared by (generated tokens in serving).
    parts_j : dict
        ``device_j`` by component (``idle``, ``active``, ``matrix``, ``memory``, ``link``), J.

    Returns
    -------
    dict
        ``power_w_per_device``, ``power_w_per_node``, ``energy_j``, ``energy_wall_j``,
        ``energy_j_per_token`` and ``breakdown.energy.*``, as :func:`inference_power` gives them.
    """
    return energy_keys(c, device_j, per_second(device_j, seconds), seconds, tokens, parts_j)
