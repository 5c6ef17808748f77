"""Power and energy of a run, from the work its devices do: counts x energy per action + floors.

A device's mean power over a span of ``T`` seconds in which it does ``F`` FLOPs, moves ``M``
bytes through device memory and sends ``L`` bytes over the fabric is

    P = idle_w + active_w + matrix_w · F / (T · peak) + e_mem · M / T + e_link · L / T,

with the dynamic part scaled down where the sum would pass the board limit ``tdp_w`` (the
device then throttles; the time model does not slow it down yet). ``idle_w`` is a powered,
idle board; ``active_w`` is the floor added while a job runs (clocks, voltage and front-ends
up, even with no math or memory traffic); ``matrix_w`` is the matrix engines' dynamic power at
their full dense rate; ``e_mem`` and ``e_link`` are energies per byte (``memory_pj_per_byte``,
``link_pj_per_byte``). This is the action-count form of Accelergy (Wu et al., ICCAD'19) and of
GPU power models such as GPUWattch (Leng et al., ISCA'13): static plus the sum of activity x energy.
Compute-bound phases (prefill, training GEMMs) reach the limit, memory-bound decode stays far
below it, as Splitwise measured (Patel et al., ISCA'24).

A server at the wall (what MLPerf Power measures) adds its host — CPUs, memory, NICs, switches,
fans (``host_w``) — and idle devices the run leaves unused in a partly filled node, all divided
by the power supplies' efficiency (``psu_efficiency``).

Every function takes the column dict ``c`` (:mod:`perfsim.columns`) and result arrays, and
returns arrays of the broadcast shape.
"""

from __future__ import annotations

import numpy as np

COMPONENTS = ("idle", "active", "matrix", "memory", "link", "vector", "pim")


def _per_second(amount, seconds):
    """``amount / seconds``: 0 where the span is empty, NaN where it is unknown (infeasible rows)."""
    seconds = np.asarray(seconds, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(seconds == 0, 0.0, np.asarray(amount, dtype=float) / seconds)


def device_power(c, seconds, flops, hbm_bytes, link_bytes, vector_ops=0.0, pim_bytes=0.0, pim_link_bytes=0.0):
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
    dynamic = {
        "matrix": c["matrix_w"] * _per_second(flops, seconds) / c["peak_flops"],
        "memory": c["memory_j_per_byte"] * _per_second(hbm_bytes, seconds),
        "link": c["link_j_per_byte"] * _per_second(np.add(link_bytes, pim_link_bytes), seconds),
    }
    has_vector = np.any(np.asarray(vector_ops) > 0)
    if has_vector:
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(np.asarray(vector_ops) > 0, _per_second(vector_ops, seconds) / c["vector_flops"], 0.0)
        share = np.where(np.isfinite(share) | np.isnan(np.asarray(seconds, dtype=float)), share, 0.0)
        dynamic["vector"] = c.get("vector_w", 0.0) * share
    total = dynamic["matrix"] + dynamic["memory"] + dynamic["link"] + dynamic.get("vector", 0.0)
    headroom = np.maximum(c["tdp_w"] - c["idle_w"] - c["active_w"], 0.0)
    scale = np.where(total > headroom, np.divide(headroom, total, out=np.zeros_like(total), where=total > 0), 1.0)
    parts = {"idle": c["idle_w"] + 0.0 * total, "active": c["active_w"] + 0.0 * total}
    parts.update({k: v * scale for k, v in dynamic.items()})
    parts.setdefault("vector", 0.0 * total)
    parts["pim"] = c.get("pim_j_per_byte", 0.0) * _per_second(pim_bytes, seconds) + 0.0 * total
    parts["power_w"] = sum(parts[k] for k in COMPONENTS)
    return parts


def _wall(c, device_w, seconds):
    """Servers at the wall: ``(power_w_per_node, energy_wall_j, host_j, psu_loss_j, unused_j)``."""
    devices = c["num_devices"]
    per_node = c["devices_per_node"]
    nodes = np.ceil(devices / per_node)
    used = devices / nodes
    unused_w = (per_node - used) * c["idle_w"]
    dc_w = used * device_w + unused_w + c["host_w"]
    node_w = dc_w / c["psu_efficiency"]
    span = nodes * seconds
    return node_w, node_w * span, c["host_w"] * span, (node_w - dc_w) * span, unused_w * span


def _energy_keys(c, device_j, device_w, seconds, tokens, parts_j):
    """The CONTRACT keys shared by both modes, plus ``breakdown.energy.*`` (all devices, J)."""
    devices = c["num_devices"]
    node_w, wall_j, host_j, psu_j, unused_j = _wall(c, device_w, seconds)
    energy = devices * device_j
    out = {
        "power_w_per_device": device_w,
        "power_w_per_node": node_w,
        "energy_j": energy,
        "energy_wall_j": wall_j,
        "energy_j_per_token": np.divide(energy, tokens, out=np.full(np.broadcast(energy, tokens).shape, np.nan),
                                        where=tokens > 0),
    }
    for name in COMPONENTS:
        out[f"breakdown.energy.{name}_j"] = devices * parts_j[name]
    out["breakdown.energy.host_j"] = host_j
    out["breakdown.energy.unused_devices_j"] = unused_j
    out["breakdown.energy.psu_loss_j"] = psu_j
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
    return _energy_keys(c, device_j, _per_second(device_j, seconds), seconds, tokens, parts_j)


def inference_power(c, out):
    """Power and energy of one inference request batch (prefill, then ``gen_len - 1`` steps).

    Returns the CONTRACT keys ``power_w_per_device``, ``power_w_per_node``, ``energy_j``,
    ``energy_wall_j``, ``energy_j_per_token`` (per generated token), ``prefill_power_w_per_device``,
    ``decode_power_w_per_device`` and ``breakdown.energy.*``.
    """
    pre_s = out["breakdown.prefill.total_s"]
    step_s = out["breakdown.decode.total_s"]
    steps = out["breakdown.decode.steps"]
    work = ("flops", "hbm_bytes", "link_bytes", "vector_ops", "pim_bytes", "pim_link_bytes")
    pre = device_power(c, pre_s, *(out.get(f"breakdown.prefill.{k}", 0.0) for k in work))
    dec = device_power(c, step_s, *(out.get(f"breakdown.decode.{k}", 0.0) for k in work))
    decode_s = steps * step_s
    seconds = pre_s + decode_s
    parts_j = {k: pre[k] * pre_s + dec[k] * decode_s for k in COMPONENTS}
    device_j = pre["power_w"] * pre_s + dec["power_w"] * decode_s
    device_w = _per_second(device_j, seconds)
    result = _energy_keys(c, device_j, device_w, seconds, c["batch"] * c["gen_len"], parts_j)
    result["prefill_power_w_per_device"] = pre["power_w"]
    result["decode_power_w_per_device"] = dec["power_w"]
    result["breakdown.energy.prefill_j"] = c["num_devices"] * pre["power_w"] * pre_s
    result["breakdown.energy.decode_j"] = c["num_devices"] * dec["power_w"] * decode_s
    return result


def train_power(c, out):
    """Power and energy of one training step, or of the whole job when ``train_tokens`` is given.

    The job is ``train_tokens / tokens_per_s`` seconds of identical steps (``time_to_train_s``);
    ``energy_j_per_token`` is per trained token.
    """
    step_s = out["step_time_s"]
    flops = out["hardware_tflops_per_device"] * 1e12 * step_s
    parts = device_power(c, step_s, flops, out["breakdown.train.hbm_bytes"], out["breakdown.train.link_bytes"])
    job_tokens = c["train_tokens"]
    given = ~np.isnan(job_tokens)
    step_tokens = c["global_batch"] * c["seq_len"]
    seconds = np.where(given, np.divide(job_tokens, out["tokens_per_s"]), step_s)
    tokens = np.where(given, job_tokens, step_tokens)
    parts_j = {k: parts[k] * seconds for k in COMPONENTS}
    result = _energy_keys(c, parts["power_w"] * seconds, parts["power_w"], seconds, tokens, parts_j)
    result["breakdown.energy.step_j"] = c["num_devices"] * parts["power_w"] * step_s
    if np.any(given):
        result["time_to_train_s"] = np.where(given, seconds, np.nan)
    return result
