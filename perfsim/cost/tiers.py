"""Memory tiers beyond the device: moving bytes between HBM, host memory and NVMe, and host compute.

One device sees three tiers: its own memory (HBM/GDDR), the node's host memory (``cpu``) and the
node's NVMe drives (``nvme``). Bytes travel over shared resources, each with a bandwidth:

* the device's **host link** (PCIe, NVLink-C2C), per direction: ``host_link_gb_s × efficiency``
  (protocol overhead; full duplex, so loads and stores do not compete);
* the node's **NVMe**: ``nvme_bandwidth_gb_s`` (reads; writes at ``nvme_write_bandwidth_gb_s``
  where the spec gives it), shared by the devices of the node that use it;
* the node's **host memory**: ``cpu.memory_bandwidth_gb_s × memory_efficiency`` (the fraction a
  streaming kernel reaches, as STREAM measures it), shared likewise. DMA from or to host memory
  touches it once; NVMe data bounces through it (written, then read) unless the node declares a
  direct NVMe-to-device path (GPUDirect Storage, ``nvme_direct``).

Streams that run concurrently (offload engines pipeline them in chunks: ZeRO-Infinity, FlexGen)
take as long as their busiest resource: ``max(bytes_r / bandwidth_r)`` over the resources ``r``
they cross. :func:`perfsim.memcpy` and the offloading cost models use this one formula.

Host compute (attention over a host-resident KV cache, the CPU Adam step) is a roofline on the
node's CPUs: ``max(flops / cpu_tflops, bytes / host memory bandwidth)``, shared by the devices of
the node whose work it does.

Every function takes the column dict ``c`` (:mod:`perfsim.plan.columns`) and arrays that broadcast.
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import any_row, maximum, minimum


def devices_on_node(c):
    """Devices of one node a run uses: they share the node's NVMe, host memory and CPUs."""
    if "num_devices" not in c:
        return 1.0
    return maximum(minimum(c["num_devices"], c["devices_per_node"]), 1.0)


def duration(amount, rate):
    """``amount / rate``: 0 where nothing moves, NaN (unknown) where there is no path (rate 0);
    the plan's feasibility checks name the missing tier."""
    amount = np.asarray(amount, dtype=float)
    rate = np.asarray(rate, dtype=float)
    if not any_row(amount > 0):  # nothing moves on any row (most plans, most streams)
        return np.zeros(np.broadcast(amount, rate).shape)
    t = np.where(rate > 0, amount / np.where(rate > 0, rate, 1.0), np.nan)
    return np.where(amount > 0, t, 0.0)


def host_link_bandwidth(c):
    """Bytes/s one device moves over its host link in one direction."""
    return c["host_link_bw"] * c["host_link_eff"]


def host_memory_bandwidth(c, sharing=None):
    """Bytes/s of host memory one device's work gets (0 where the spec gives no host CPU)."""
    sharing = devices_on_node(c) if sharing is None else sharing
    return c["cpu_bw"] * c["cpu_mem_eff"] / sharing


def transfer_time(c, *, h2d=0.0, d2h=0.0, nvme_read=0.0, nvme_write=0.0, host=0.0, sharing=None):
    """Time (s) of concurrent, pipelined streams of one device: the busiest resource sets it.

    Parameters
    ----------
    c : dict
        Columns ``host_link_bw``, ``host_link_eff``, ``nvme_bw``, ``nvme_write_bw``, ``cpu_bw``,
        ``cpu_mem_eff``, ``devices_per_node`` (and ``num_devices`` in a plan).
    h2d, d2h : array_like
        Bytes over the device's host link, host to device and device to host.
    nvme_read, nvme_write : array_like
        Bytes read from / written to the node's NVMe for this device.
    host : array_like
        Bytes of host-memory traffic for this device (DMA reads and writes, NVMe bounce).
    sharing : array_like, optional
        Devices that share the node's NVMe and host memory (default: the devices of one node the
        plan uses).

    Returns
    -------
    ndarray
        Seconds; NaN where bytes must cross a path the spec does not have.

    Examples
    --------
    >>> c = dict(host_link_bw=32e9, host_link_eff=0.8, nvme_bw=5e9, nvme_write_bw=4e9, cpu_bw=200e9,
    ...          cpu_mem_eff=0.8, devices_per_node=8.0)
    >>> float(transfer_time(c, h2d=25.6e9))  # PCIe Gen4 x16 at 80 %: 25.6 GB/s
    1.0
    >>> float(transfer_time(c, h2d=10e9, nvme_read=10e9, sharing=1.0))  # the drive is the bottleneck
    2.0
    """
    sharing = devices_on_node(c) if sharing is None else sharing
    link = host_link_bandwidth(c)
    write_bw = np.where(c["nvme_write_bw"] > 0, c["nvme_write_bw"], c["nvme_bw"])
    nvme = duration(nvme_read, c["nvme_bw"] / sharing) + duration(nvme_write, write_bw / sharing)
    mem_bw = host_memory_bandwidth(c, sharing)
    # DMA needs no CPU spec: host memory only limits where the spec says how fast it is
    memory = np.where(mem_bw > 0, duration(host, mem_bw), 0.0)
    return np.maximum(np.maximum(duration(h2d, link), duration(d2h, link)), np.maximum(nvme, memory))


def tier_traffic(c, *, load_cpu=0.0, load_nvme=0.0, store_cpu=0.0, store_nvme=0.0):
    """Resource bytes (:func:`transfer_time` keywords) of loading to the device from host memory
    or NVMe and storing back to them. NVMe data crosses the host link too, and bounces through
    host memory (written, then read) unless ``nvme_direct``."""
    bounce = 2.0 * (1.0 - c["nvme_direct"])
    return dict(h2d=load_cpu + load_nvme, d2h=store_cpu + store_nvme, nvme_read=load_nvme, nvme_write=store_nvme,
                host=load_cpu + store_cpu + bounce * (load_nvme + store_nvme))


def host_compute_time(c, flops, moved_bytes, sharing=None):
    """Roofline time (s) of host-CPU work for one device: FLOPs at the node's fp32 rate and bytes
    at its host memory bandwidth, both shared by ``sharing`` devices; NaN without a CPU spec.

    >>> c = dict(cpu_flops=2e12, cpu_bw=100e9, cpu_mem_eff=0.8, devices_per_node=1.0)
    >>> float(host_compute_time(c, 1e9, 8e9, sharing=1.0))  # memory-bound: 8 GB at 80 GB/s
    0.1
    """
    sharing = devices_on_node(c) if sharing is None else sharing
    memory = duration(moved_bytes, host_memory_bandwidth(c, sharing))
    return np.maximum(duration(flops, c["cpu_flops"] / sharing), memory)


def host_attention_traffic(c):
    """Host-memory bytes the host attention moves per cached KV byte (the KV dtype's bytes).

    The engine's ``cpu_attention_traffic`` is that figure on its reference path: a model the
    engine keeps no particular cache for (``cpu_cache_bytes``), each KV head attended as it is.
    A row's own path moves more where eager PyTorch makes a fresh copy of the cache before the
    attention matmuls: a cast of a cache stored in another type than the one the host computes in
    (``cpu_compute_bytes``; ``tensor.float()``), or grouped KV heads copied out to every query
    head they serve (``cpu_attention_expands_kv``: Hugging Face ``repeat_kv``). Per cached
    element such a copy reads the cache (``s`` bytes) and writes ``g`` copies of ``f`` bytes
    (``g`` query heads per KV head where they are expanded, else 1), whose fresh pages the OS
    zeroes first, and the matmuls then read the copies: ``s + 3 g f`` bytes, against ``s`` for
    a cache read in place. The row's path over the reference path's bytes scales the engine's
    figure. Absent sizes are the KV dtype's (``kv_bytes``).

    >>> c = dict(cpu_attention_traffic=8.0, cpu_cache_bytes=4.0, host_kv_bytes=4.0, cpu_compute_bytes=4.0,
    ...          kv_bytes=2.0, cpu_attention_expands_kv=1.0, heads=64.0, kv_heads=8.0)
    >>> float(host_attention_traffic(c))  # (4 + 3 x 8 x 4) / 4 = 25 times the reference path
    200.0
    """
    kv = c["kv_bytes"]
    reference = np.where(c["cpu_cache_bytes"] > 0, c["cpu_cache_bytes"], kv)
    stored = np.where(c["host_kv_bytes"] > 0, c["host_kv_bytes"], reference)
    compute = np.where(c["cpu_compute_bytes"] > 0, c["cpu_compute_bytes"], reference)
    group = np.where(c["cpu_attention_expands_kv"] > 0, c["heads"] / np.maximum(c["kv_heads"], 1.0), 1.0)

    def moved(size, heads):  # bytes per cached element: read in place, or copied first
        return size + np.where((size != compute) | (heads > 1.0), 3.0 * heads * compute, 0.0)

    return c["cpu_attention_traffic"] * moved(stored, group) / moved(reference, 1.0)


def overlapped(compute, transfer, chunks, window):
    """Time of ``chunks`` equal steps (layers) whose transfers are prefetched one step ahead.

    Chunk ``i + 1`` loads while the first ``window`` share of chunk ``i``'s compute runs (double
    buffering: ``window = 1``; an engine that syncs after each of ``n`` GPU batches of a layer
    overlaps the next layer's load with the first batch only: ``1 / n``; no prefetch: 0). The
    first load and the last compute stand alone:

        T/n + C/n + (n - 1)/n · (max(T, window · C) + (1 - window) · C)

    for totals ``C`` and ``T`` over ``n`` chunks: ``max(C, T) + min(C, T) / n`` with full
    overlap, ``C + T`` with none.

    >>> float(overlapped(10.0, 4.0, 4, 1.0)), float(overlapped(10.0, 4.0, 4, 0.0))
    (11.0, 14.0)
    """
    chunks = np.maximum(chunks, 1.0)
    steady = np.maximum(transfer, window * compute) + (1.0 - window) * compute
    timed = (transfer + compute) / chunks + (chunks - 1.0) / chunks * steady
    return np.where(~(np.asarray(transfer) <= 0), timed, compute)  # NaN (no path) stays unknown
