"""Columns of the device kinds a plan runs on: NPU/TPU engines, a PIM block, the placement of ops.

Spec fields become numbers per row here; :mod:`perfsim.cost.npu` and :mod:`perfsim.cost.pim` price
work with them.
"""

from __future__ import annotations

import numpy as np

from perfsim.specs.place import PLACE_KEYS
from perfsim.specs.units import GIB

KIND_NAMES = ("gpu", "npu", "tpu", "pim", "cpu")


def pim_rates(spec) -> dict:
    """Scalar rates of a spec's PIM block (zeros where the spec has none).

    Returns
    -------
    dict
        ``pim_flops`` (FLOP/s), ``pim_bw`` (B/s in the banks), ``pim_eff``, ``pim_capacity_bytes``,
        ``pim_link_bw`` (B/s per direction; 0 when PIM is the device's own memory),
        ``pim_j_per_byte`` (J per byte read in the banks), ``pim_concurrent`` (1 where host memory
        traffic and PIM commands may overlap by default).

    Examples
    --------
    >>> from perfsim.specs.hardware import load_hardware
    >>> r = pim_rates(load_hardware("npu-pim"))
    >>> r["pim_flops"] / 1e12, r["pim_bw"] / 1e12, r["pim_link_bw"]
    (32.768, 32.768, 0.0)
    """
    pim = spec.pim
    if not pim:
        return {"pim_flops": 0.0, "pim_bw": 0.0, "pim_eff": 1.0, "pim_capacity_bytes": 0.0, "pim_link_bw": 0.0,
                "pim_j_per_byte": 0.0, "pim_concurrent": 0.0}
    bw = pim["internal_bandwidth_gb_s"] * 1e9
    if all(k in pim for k in ("channels", "banks_per_channel", "macs_per_bank", "clock_ghz")):
        flops = 2.0 * pim["channels"] * pim["banks_per_channel"] * pim["macs_per_bank"] * pim["clock_ghz"] * 1e9
    else:
        flops = bw * pim["flops_per_byte"]
    mode = pim.get("mode", "concurrent" if pim.get("row_buffers", 1) >= 2 else "blocked")
    return {
        "pim_flops": flops,
        "pim_bw": bw,
        "pim_eff": pim.get("efficiency", 1.0),
        "pim_capacity_bytes": pim.get("capacity_gib", spec["hbm_capacity_gib"]) * GIB,
        "pim_link_bw": pim.get("link_gb_s", 0.0) * 1e9,
        # a byte read inside a bank; without a figure, a byte read through the memory interface
        "pim_j_per_byte": pim.get("access_pj_per_byte", spec["memory_pj_per_byte"]) * 1e-12,
        "pim_concurrent": float(mode == "concurrent"),
    }


def device_values(spec) -> dict:
    """Scalar columns of one spec's device kind: its NPU/TPU engines and its PIM block
    (:func:`pim_rates`)."""
    return {
        "systolic": float(spec.kind in ("npu", "tpu")),
        "arrays": float(spec.engines.get("arrays", 1)),
        "array_size": float(spec.engines.get("size", 1)),
        "weight_stationary": float(spec.engines.get("weight_stationary", True)),
        "vector_w": spec["vector_w"],
        "main_kind": float(KIND_NAMES.index(spec.kind)),
        "has_pim": float(bool(spec.pim)),
        "pim_device": float(spec.kind == "pim"),
        **pim_rates(spec),
    }


def device_columns(grid, specs) -> dict:
    """Columns of the NPU engines, the PIM block and the placement plan (one entry per row).

    ``specs`` are the hardware specs of ``grid.values("hardware")``, in order.
    """
    per_spec = [device_values(s) for s in specs]
    c = {key: grid.gather("hardware", [v[key] for v in per_spec]) for key in per_spec[0]}
    modes, subs = grid.values("pim_mode"), grid.values("sub_batches")
    c["pim_args"] = grid.gather("pim_mode", [float(v is not None) for v in modes]) \
        + grid.gather("sub_batches", [float(v is not None) for v in subs])
    given = grid.gather("pim_mode", [np.nan if v is None else float(v == "concurrent") for v in modes])
    concurrent = np.where(np.isnan(given), c["pim_concurrent"], given)
    c["pim_blocked"] = 1.0 - concurrent
    sub = grid.gather("sub_batches", [np.nan if v is None else float(v) for v in subs])
    c["sub_batches"] = np.where(np.isnan(sub), np.where(concurrent > 0, 2.0, 1.0), sub)
    # not given: a concurrent system interleaves two sub-batches where that is faster (a small
    # batch split in two reads every weight twice for little PIM work to hide)
    c["sub_batches_auto"] = np.where(np.isnan(sub) & (concurrent > 0), 1.0, 0.0)

    places = [p or {} for p in grid.values("place")]
    for key in PLACE_KEYS:
        c[f"place_{key}"] = grid.gather("place", [float(p.get(key) == "pim") for p in places])
    c["place_pim"] = grid.gather("place", [float("pim" in p.values()) for p in places])
    # a placement naming the main device by another kind than the hardware's
    wrong = np.array([[float(any(v not in ("pim", "host") and v != s.kind for v in p.values())) for s in specs]
                      for p in places])
    ip = grid.codes("place") if len(places) > 1 else 0
    ih = grid.codes("hardware") if len(specs) > 1 else 0
    c["place_wrong_kind"] = wrong[ip, ih]
    return c
