"""Processing-in-memory (PIM) device model: MAC units at the DRAM banks, as arrays.

A PIM memory (Newton, Samsung HBM-PIM, SK hynix AiM; the PIM of NeuPIMs and AttAcc) puts
``macs_per_bank`` multipliers next to every bank. All banks compute at once on data read from
their own rows, so a GEMV whose matrix lives in the banks runs at the aggregate bank rate:

    compute rate   F = 2 · channels · banks_per_channel · macs_per_bank · clock      (FLOP/s)
                   (or, where the spec gives no MAC count, internal bandwidth × flops_per_byte,
                   AttAcc's FLOPS_PER_HBM = MEM_BW_PER_HBM × opb)
    bank bandwidth B = internal_bandwidth_gb_s (all banks together)
    time           t = max(FLOPs / F, bytes in banks / B) / efficiency + dispatch

where ``efficiency`` is the spec's row-buffer derating (a bank pauses to open and close each
row). Only the matrix is read inside the banks; the input vector is broadcast to the banks and
the result read back through the memory interface (the host's side of the work).

The matrix is read once per input vector: a batch of ``m`` vectors costs ``m`` GEMVs (PIM has no
on-die reuse), which is why PIM suits attention over a KV cache (one query per sequence and
head) and small-batch weights, and not the batched GEMMs of projections and MLPs (NeuPIMs,
Heo et al. ASPLOS'24; AttAcc, Park et al. ASPLOS'24).

PIM stacks beside the host (AttAcc: 5 HBM3-PIM stacks per GPU) are reached over a link of
``link_gb_s`` per direction; PIM that *is* the host's memory (NeuPIMs) needs none.
"""

from __future__ import annotations

import numpy as np


def pim_time(flops, bank_bytes, *, pim_flops, pim_bw, pim_eff, launch_s=0.0):
    """Seconds of a GEMV-class op in the banks: ``max(FLOPs / F, bytes / B) / efficiency`` plus
    its dispatch; 0 where there is no work.

    Examples
    --------
    >>> float(pim_time(2e9, 2e9, pim_flops=32e12, pim_bw=32e12, pim_eff=0.5)) * 1e6  # 1 GMAC over 2 GB
    125.0
    """
    flops = np.asarray(flops, dtype=float)
    bank_bytes = np.asarray(bank_bytes, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.maximum(flops / pim_flops, bank_bytes / pim_bw) / pim_eff
    present = (flops > 0) | (bank_bytes > 0)
    return np.where(present, t + launch_s, 0.0)


def link_time(size_bytes, link_bw):
    """Seconds to move ``size_bytes`` over the host-to-PIM link (0 where nothing moves)."""
    size_bytes = np.asarray(size_bytes, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(size_bytes > 0, size_bytes / link_bw, 0.0)
    return np.where(np.isfinite(t), t, 0.0)
