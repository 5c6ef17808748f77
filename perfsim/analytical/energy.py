"""Power and energy of a whole run: an inference request batch, a training step or a training job.

Each phase's device power comes from :func:`perfsim.cost.power.device_power` over the work the
phase did (FLOPs, memory and link bytes); the servers at the wall from :mod:`perfsim.cost.wall`.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.analytical.inference import one_configuration
from perfsim.cost.clock import _Numbers
from perfsim.cost.power import COMPONENTS, device_power, per_second
from perfsim.cost.wall import WALL_COLUMNS, energy_keys
from perfsim.plan.rows import any_row


def _clocked(out, prefix, seconds):
    """``clock`` and ``full_seconds`` of a capped span of ``seconds`` in ``out`` (none where nothing
    was capped)."""
    if prefix + "clock_ratio" not in out:
        return {}
    return {"clock": out[prefix + "clock_ratio"], "full_seconds": seconds - out[prefix + "throttle_s"]}


#: the classes of one number (a NumPy array, even of no dimension, takes the call on arrays)
_NUMBERS = (float, int, np.float64)
#: the columns :func:`device_power` reads
_POWER_COLUMNS = ("idle_w", "active_w", "matrix_w", "peak_flops", "memory_j_per_byte", "link_j_per_byte", "tdp_w",
                  "voltage_floor", "main_kind", "pim_j_per_byte", "host_gap_w")


def _on_numbers(c, phases):
    """The power columns of one configuration as Python numbers, and the phases' work and clocks turned
    to Python numbers in place, for :func:`device_power` on numbers (the operations it does on arrays,
    so the same values); None where a value is an array or not finite, or a phase does vector-engine
    work (the call on arrays then). A phase is ``(work, clocked)``: :func:`device_power`'s arguments
    from ``seconds`` on, and its keyword arguments."""
    values = [v for work, clocked in phases for v in (*work, *clocked.values())]
    values += [c[k] for k in _POWER_COLUMNS if k in c and k != "host_gap_w"]
    for v in values:
        if v.__class__ not in _NUMBERS or not math.isfinite(v):
            return None
    if "host_gap_w" in c and (c["host_gap_w"].__class__ not in _NUMBERS or math.isinf(c["host_gap_w"])):
        return None  # (NaN: no measurement, which the gap's floor reads as such on numbers too)
    if any(len(work) > 4 and work[4] != 0.0 for work, _ in phases):  # (vector_ops)
        return None
    for i, (work, clocked) in enumerate(phases):
        phases[i] = [float(v) for v in work], {k: float(v) for k, v in clocked.items()}
    return {k: float(c[k]) for k in _POWER_COLUMNS if k in c}


#: the columns of :data:`perfsim.cost.wall.WALL_COLUMNS` it divides by or reads as a rate
_WALL_DIVISORS = ("num_devices", "devices_per_node", "psu_efficiency", "nvme_bw", "scaleout_bw")


def _wall_numbers(c, values):
    """The wall's columns (:data:`perfsim.cost.wall.WALL_COLUMNS`) of one configuration and ``values`` as
    Python numbers, for :func:`perfsim.cost.wall.energy_keys` on numbers; None where one is not finite
    or a divisor or rate is not above 0 (the keys on arrays then)."""
    cols = {k: float(c[k]) for k in WALL_COLUMNS if k in c}
    numbers = [float(v) for v in values]
    if not all(math.isfinite(v) for v in (*cols.values(), *numbers)) or not all(cols[k] > 0 for k in _WALL_DIVISORS):
        return None
    return cols, numbers


def inference_power(c, out, one=None):
    """Power and energy of one inference request batch (prefill, then ``gen_len - 1`` steps).

    Returns the result keys (docs/reference.md) ``power_w_per_device``, ``power_w_per_node``, ``energy_j``,
    ``energy_wall_j``, ``energy_j_per_token`` (per generated token), ``prefill_power_w_per_device``,
    ``decode_power_w_per_device`` and ``breakdown.energy.*``. ``one``: :func:`one_configuration` of ``c``,
    where known.
    """
    pre_s = out["breakdown.prefill.total_s"]
    step_s = out["breakdown.decode.total_s"]
    steps = out["breakdown.decode.steps"]
    work = ("total_s", "flops", "hbm_bytes", "link_bytes", "vector_ops", "pim_bytes", "pim_link_bytes")
    # each phase's host time the device does not hide and its stage's kernel launch gaps: drawn at the
    # host-gap power (perfsim.cost.power.host_gap_floor)
    phases = [([out.get(f"breakdown.{phase}.{k}", 0.0) for k in work],
               {**_clocked(out, f"breakdown.{phase}.", out[f"breakdown.{phase}.total_s"]),
                "gap_seconds": out.get(f"breakdown.{phase}.overhead_s", 0.0)
                + out.get(f"breakdown.{phase}.launch_s", 0.0) / c["pp"]}) for phase in ("prefill", "decode")]
    one = one_configuration(c) if one is None else one
    numbers = _on_numbers(c, phases) if one else None
    if numbers is not None:
        pre, dec = (device_power(numbers, *values, **clocked) for values, clocked in phases)
    elif one and phases[0][1].keys() == phases[1][1].keys():
        # one configuration: both phases in one call on an axis of two (each elementwise as alone)
        both = device_power(c, *(np.array(v, dtype=float) for v in zip(phases[0][0], phases[1][0], strict=True)),
                            **{k: np.array([phases[0][1][k], phases[1][1][k]], dtype=float) for k in phases[0][1]})
        pre, dec = ({k: v[i] for k, v in both.items()} for i in (0, 1))
    else:
        pre, dec = (device_power(c, *values, **clocked) for values, clocked in phases)
    host = [out.get(f"breakdown.{key}", 0.0) for key in ("decode.host_attention_s", "prefill.nvme_bytes",
                                                         "decode.nvme_bytes", "prefill.nic_bytes", "decode.nic_bytes")]
    # one configuration whose device power was priced on numbers: the wall too (the same operations)
    wall = _wall_numbers(c, [pre_s, step_s, steps, c["batch"], c["gen_len"], *host]) if numbers is not None else None
    if wall is not None:
        pre_s, step_s, steps, batch, gen_len, *host = wall[1]
    decode_s = steps * step_s
    seconds = pre_s + decode_s
    parts_j = {k: pre[k] * pre_s + dec[k] * decode_s for k in COMPONENTS}
    device_j = pre["power_w"] * pre_s + dec["power_w"] * decode_s
    device_w = (per_second if wall is None else _Numbers.per_second)(device_j, seconds)
    activity = {"host_cpu_s": steps * host[0], "nvme_bytes": host[1] + steps * host[2],
                "nic_bytes": host[3] + steps * host[4]}
    if wall is None:
        result = energy_keys(c, device_j, device_w, seconds, c["batch"] * c["gen_len"], parts_j, activity)
    else:
        result = energy_keys(wall[0], device_j, device_w, seconds, batch * gen_len, parts_j, activity, numbers=True)
    result["prefill_power_w_per_device"] = pre["power_w"]
    result["decode_power_w_per_device"] = dec["power_w"]
    prefill_j = c["num_devices"] * pre["power_w"] * pre_s
    decode_j = c["num_devices"] * dec["power_w"] * decode_s
    result["breakdown.energy.prefill_j"] = prefill_j
    result["breakdown.energy.decode_j"] = decode_j
    # per token of each phase: prompt tokens for the prefill, tokens of the decode steps for the decode
    result["breakdown.energy.prefill_j_per_token"] = prefill_j / (c["batch"] * c["prompt_len"])
    decode_tokens = c["batch"] * steps
    result["breakdown.energy.decode_j_per_token"] = np.divide(
        decode_j, decode_tokens, out=np.full(np.broadcast(decode_j, decode_tokens).shape, np.nan),
        where=decode_tokens > 0)
    return result


def train_power(c, out, one=None):
    """Power and energy of one training step, or of the whole job when ``train_tokens`` is given.

    The job is ``train_tokens / tokens_per_s`` seconds of identical steps (``time_to_train_s``);
    ``energy_j_per_token`` is per trained token. ``one``: :func:`one_configuration` of ``c``, where known.
    """
    step_s = out["step_time_s"]
    work = [step_s, out["breakdown.train.flops"], out["breakdown.train.hbm_bytes"], out["breakdown.train.link_bytes"]]
    phases = [(work, {**_clocked(out, "breakdown.train.", step_s),
                      "gap_seconds": out.get("breakdown.train.overhead_s", 0.0)})]
    numbers = _on_numbers(c, phases) if (one_configuration(c) if one is None else one) else None
    parts = device_power(c if numbers is None else numbers, *phases[0][0], **phases[0][1])
    job_tokens = c["train_tokens"]
    given = ~np.isnan(job_tokens)
    step_tokens = c["global_batch"] * c["seq_len"]
    host = [out[f"breakdown.train.{key}"] for key in ("host_cpu_s", "nvme_bytes", "nic_bytes")]
    # one configuration whose device power was priced on numbers: the wall too (the same operations)
    wall = _train_wall(c, out, step_s, step_tokens, host, given) if numbers is not None else None
    if wall is None:
        seconds = np.where(given, np.divide(job_tokens, out["tokens_per_s"]), step_s)
        tokens = np.where(given, job_tokens, step_tokens)
    else:
        step_s, step_tokens, *host = wall[1][:5]
        seconds, tokens = (wall[1][5] / wall[1][6], wall[1][5]) if given else (step_s, step_tokens)
    parts_j = {k: parts[k] * seconds for k in COMPONENTS}
    steps = seconds / step_s  # the job's steps (one without train_tokens)
    activity = {key: steps * h for key, h in zip(("host_cpu_s", "nvme_bytes", "nic_bytes"), host, strict=True)}
    result = energy_keys(c if wall is None else wall[0], parts["power_w"] * seconds, parts["power_w"], seconds, tokens,
                         parts_j, activity, numbers=wall is not None)
    result["breakdown.energy.step_j"] = c["num_devices"] * parts["power_w"] * step_s
    if any_row(given):
        result["time_to_train_s"] = np.where(given, seconds, np.nan) if wall is None else seconds
    return result


def _train_wall(c, out, step_s, step_tokens, host, given):
    """:func:`_wall_numbers` of a training step (or job, ``given`` its tokens): the columns, then the step's
    seconds and tokens, its host activity, the job's tokens and rate; None where a value is not finite or
    the step or the rate is not above 0 (the keys on arrays then)."""
    job = [c["train_tokens"], out["tokens_per_s"]] if given else []
    wall = _wall_numbers(c, [step_s, step_tokens, *host, *job])
    if wall is None or not wall[1][0] > 0 or (given and not wall[1][6] > 0):
        return None
    return wall
