"""Collective communication: alpha-beta cost per algorithm and protocol, as arrays.

For ``n`` ranks exchanging a buffer of ``S`` bytes over links of bandwidth ``B`` (per device, per
direction) that reach a fraction ``e`` of it:

=============  =======================================  ===========================
op             ring                                      steps
=============  =======================================  ===========================
all_reduce     2(n-1)/n · S / (B e)                      2(n-1)
all_gather     (n-1)/n · S / (B e)   (S = gathered size) n-1
reduce_scatter (n-1)/n · S / (B e)   (S = input size)    n-1
all_to_all     (n-1)/n · S / (B e)                       n-1
send_recv      S / (B e)                                 1
=============  =======================================  ===========================

Each step costs a latency ``alpha``, and the collective as a whole a fixed ``base`` (kernel launch,
setup and the final synchronisation), whatever its ranks and size: NCCL's tuning model prices an
algorithm/protocol as ``baseLatency + nsteps × hwLatency + bytes / busBw`` (``baseLatencies`` and
``hwLatencies`` in ``src/graph/tuning.cc``). Two protocols are priced and the faster one is taken, as
NCCL's tuner does: the *simple* protocol (full bandwidth, ``latency_us`` per step) and the
*low-latency* protocol (LL: 8-byte stores carrying 4 bytes of data and 4 of flag, so half the
bandwidth, ``ll_latency_us`` per step). A *tree* all-reduce takes 2·log2(n) steps and moves S each
way. Where the switch reduces in the network (NVLink SHARP, ``in_network_reduction``), an
all-reduce is a reduce-scatter through the switch (each rank's memory gives up S, one share of S/n
to each rank's multimem load-reduce, and the rank receives its reduced S/n) then an all-gather
through it (the rank multicasts its S/n and receives every rank's, S): ``(n+1)/n · S`` each way
per rank, at ``in_network_efficiency``, after a latency of its own (``in_network_latency_us``;
NCCL's ``hwLatencies`` give NVLS one flat latency, not one per step). NCCL's topology search
charges an NVLS channel the same: its bandwidth on every rank's switch link each way and twice on
its head rank's, ``n + 1`` shares per link over the ``n`` channels of one node
(``ncclTopoSearchTryNvls``, ``src/graph/search.cc``). So on 2 ranks NVLS moves 1.5 S against the
ring's S and loses unless it reaches 1.5 times the ring's share of the link; NCCL's all-gather and reduce-scatter stay on the ring inside a node,
as NVLS gives them no less to move (S received, or sent, against the ring's (n-1)/n · S).

Bus bandwidth follows nccl-tests (``busbw = algbw × factor``; factor 2(n-1)/n for all-reduce,
(n-1)/n for all-gather, reduce-scatter and all-to-all, 1 for send/recv).

Inference engines run a tensor-parallel all-reduce inside one NVLink node with a kernel of their own
over peer memory instead (:func:`custom_all_reduce_time`): vLLM's and SGLang's ``custom_all_reduce``,
TensorRT-LLM's one-shot and two-shot all-reduce.

References: Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication Operations in
MPICH" (IJHPCA 2005); NVIDIA nccl-tests ``doc/PERFORMANCE.md``; NCCL ``src/graph/tuning.cc``.
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import any_row, floats, maximum, numeric, where_one

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
ALGORITHMS = ("auto", "ring", "tree")
_LL_BANDWIDTH_FRACTION = 0.5  # LL protocol: 4 data bytes per 8-byte store


def bus_factor(op: str, n):
    """nccl-tests bus-bandwidth factor of ``op`` on ``n`` ranks."""
    n = floats(n)
    if op == "all_reduce":
        return 2.0 * (n - 1.0) / n
    if op == "send_recv":
        return np.ones_like(n)
    return (n - 1.0) / n


def ring_steps(op, n):
    """Latency steps of the ring algorithm of ``op`` on ``n`` ranks (table above)."""
    if op == "all_reduce":
        return 2.0 * (n - 1.0)
    if op == "send_recv":
        return np.ones_like(n)
    return n - 1.0


def collective_time(op: str, size_bytes, n, *, bandwidth, efficiency, latency_s, ll_latency_s,
                    nvls_efficiency=0.0, base_latency_s=0.0, nvls_latency_s=None, algorithm: str = "auto",
                    steps=None):
    """Time (s) of one collective, the best protocol/algorithm the library would pick.

    Parameters
    ----------
    op : str
        One of :data:`OPS`.
    size_bytes : array_like
        Buffer size as nccl-tests counts it (bytes).
    n : array_like
        Ranks in the group; ``n <= 1`` costs nothing.
    bandwidth : array_like
        Per-device, per-direction link bandwidth of the level the group spans, B/s.
    efficiency : array_like
        Fraction of ``bandwidth`` a large ring transfer reaches.
    latency_s, ll_latency_s : array_like
        Per-step latency of the simple and the low-latency protocol, s (0 disables LL).
    nvls_efficiency : array_like
        Fraction of ``bandwidth`` an in-network (switch) all-reduce reaches on the ``(n+1)/n · S``
        it moves each way per rank; 0 where unavailable.
    base_latency_s : array_like
        Fixed cost of the collective, s, paid once whatever the algorithm and protocol.
    nvls_latency_s : array_like, optional
        Latency of the in-network all-reduce, s (NCCL prices it on its own, not per ring step);
        twice ``latency_s`` where not given or 0.
    algorithm : {"auto", "ring", "tree"}
        ``ring`` or ``tree`` force that algorithm; ``auto`` takes the fastest candidate.
    steps : array_like, optional
        Latency steps of the ring algorithm where they are not the ring's (table above): on a
        torus, the hops of the longest path (:func:`perfsim.cost.topology.torus_hops`).

    Returns
    -------
    ndarray
        Seconds; 0 where ``n <= 1`` or ``size_bytes == 0``.

    Examples
    --------
    >>> t = collective_time("all_reduce", 8 * 2**30, 8, bandwidth=300e9, efficiency=1.0,
    ...                     latency_s=0.0, ll_latency_s=0.0)
    >>> round(float(bus_factor("all_reduce", 8) * 8 * 2**30 / t / 1e9))
    300
    """
    n = floats(n)
    size = floats(size_bytes)
    steps = ring_steps(op, n) if steps is None else floats(steps)
    volume = size * (bus_factor(op, n) if op != "send_recv" else 1.0)
    beta = bandwidth * efficiency
    has_ll = any_row(numeric(ll_latency_s) > 0)

    def with_ll(steps, moved):  # simple protocol, or LL where the fabric has it and it is faster
        simple = steps * latency_s + moved / beta
        if not has_ll:
            return simple
        ll = steps * ll_latency_s + moved / (beta * _LL_BANDWIDTH_FRACTION)
        return np.where(numeric(ll_latency_s) > 0, np.minimum(simple, ll), simple)

    best = ring = with_ll(steps, volume)
    if op == "all_reduce" and algorithm != "ring":
        if algorithm == "tree":
            best = with_ll(2.0 * np.ceil(np.log2(np.maximum(n, 2.0))), size)
        else:
            # NCCL's tree is an inter-node algorithm; inside one switch it picks ring or NVLS
            nvls_eff = floats(nvls_efficiency)
            if any_row(nvls_eff > 0):
                lat = 2.0 * floats(latency_s) if nvls_latency_s is None else \
                    where_one(numeric(nvls_latency_s) > 0, nvls_latency_s, 2.0 * floats(latency_s))
                moved = (n + 1.0) / maximum(n, 1.0) * size  # reduce-scatter then multicast, each way
                nvls = np.where(nvls_eff > 0, lat + moved / (bandwidth * maximum(nvls_eff, 1e-12)), np.inf)
                best = np.minimum(ring, nvls)
    return np.where((n > 1) & (size > 0), best + base_latency_s, 0.0)


def custom_all_reduce_time(size_bytes, n, *, bandwidth, efficiency, latency_s):
    """Time (s) of an engine's all-reduce over peer memory (IPC buffers) on ``n`` ranks of one node.

    Two kernels, the faster taken (the engines pick by size and ranks: vLLM ``csrc/custom_all_reduce.cuh`` (036bb6855)
    runs one-shot on 2 ranks, and below 512 KiB on 4 or 256 KiB on 8, two-shot above; TensorRT-LLM by
    its measured strategy table):

    * one-shot: every rank reads the whole buffer from each of its ``n - 1`` peers and reduces it,
      between two barriers: ``latency + (n - 1) · S / (B e)``;
    * two-shot: a reduce-scatter (each rank reduces its ``1/n`` share read from every peer) then an
      all-gather of the shares, one more barrier: ``2 · latency + 2 (n - 1)/n · S / (B e)``.

    ``latency`` is the kernel's fixed time (launch in a CUDA graph and its flag barriers); ``e`` the
    share of the device's link bandwidth ``B`` the kernel's few thread blocks reach.

    >>> t = custom_all_reduce_time(1e6, 2, bandwidth=450e9, efficiency=0.5, latency_s=3e-6)
    >>> round(float(t) * 1e6, 3)
    7.444
    """
    n = floats(n)
    size = floats(size_bytes)
    beta = floats(bandwidth) * efficiency
    one_shot = latency_s + (n - 1.0) * size / beta
    two_shot = 2.0 * latency_s + bus_factor("all_reduce", n) * size / beta
    return np.where((n > 1) & (size > 0), np.minimum(one_shot, two_shot), 0.0)
