"""Where a collective's group sits on the fabric, and what that costs.

A group of ``ranks`` devices placed ``stride`` apart spans the package, the node's scale-up fabric
and the scale-out network; :func:`group_collective` prices the collective on the levels it crosses
(:mod:`perfsim.cost.collectives` prices one level) and :func:`nic_bytes` says what each device sends
over its scale-out NIC (for the power model). An inference engine's all-reduce inside one node takes
the engine's own kernel where the runtime gives one (:func:`engine_all_reduce`).
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.collectives import bus_factor, collective_time, custom_all_reduce_time, ring_steps
from perfsim.plan.rows import any_row, floats, maximum, minimum, numeric, where_one, zeros


def scaleup_domain(c):
    """Devices one scale-up fabric joins: the node's, or a larger domain (a TPU slice's ICI torus, an
    NVL72 rack) where the spec states ``node.scaleup.domain_devices``."""
    domain = c.get("scaleup_domain", 0.0)  # absent in hand-made column sets: the node
    return where_one(numeric(domain) > 0, domain, c["devices_per_node"])


def _torus_axes(c, ranks):
    """``(dims, k, spanned, closed)`` of a group of ``ranks`` devices on a torus fabric: its dimensions
    (``k`` at least 1), the axes the group is laid out over, the fewest that hold it in the run's slice:
    its ``num_devices`` (at most the scale-up domain) as a square or cubic torus (a 64-chip TPU v4
    job runs on one 4×4×4 cube, the rack-size block the pod is built from: Jouppi et al., ISCA'23),
    and whether the slice's rings close: its chips a multiple of ``torus_wrap`` (0: always). "How to
    Scale Your Model" (part 2, TPUs): smaller topologies (2x2x1, 2x2x2) have no wraparound links, which
    come from the optical switches on whole 4x4x4 cubes (v4, v5p) or on a full 16-chip axis (v5e)."""
    dims = np.asarray(c.get("torus_dims", 0.0), dtype=float)
    k = np.maximum(dims, 1.0)
    domain = scaleup_domain(c)
    devices = np.asarray(c.get("num_devices", 0.0), dtype=float)  # absent in hand-made column sets: the domain
    devices = np.where(devices > 0, np.minimum(devices, domain), domain)
    side = np.maximum(devices ** (1.0 / k), 2.0)
    # (np.clip's values, without its dispatch: as in _layout)
    spanned = np.minimum(np.maximum(np.ceil(np.log(np.maximum(ranks, 1.0)) / np.log(side) - 1e-9), 1.0), k)
    wrap = np.asarray(c.get("torus_wrap", 0.0), dtype=float)  # absent in hand-made column sets: always closed
    closed = (wrap <= 0) | ((devices >= wrap) & (np.mod(devices, np.maximum(wrap, 1.0)) == 0))
    return dims, k, spanned, closed


def torus_share(c, ranks, op="all_gather"):
    """Share of a device's scale-up bandwidth a collective over ``ranks`` devices uses.

    A switched fabric (NVSwitch, Infinity Fabric) gives every group the device's whole bandwidth. On a
    torus of ``k`` dimensions (TPU ICI: 2-D on v5e, 3-D on v4/v5p) each dimension takes ``1/k`` of the
    device's links, and a group laid out over ``m`` dimensions of the run's square or cubic slice
    runs its bidirectional rings over those ``m`` only: ``m / k`` of the bandwidth (Austin et al.,
    "How to Scale Your Model", part 3: an all-gather over several axes runs on all their links at once).

    An all-to-all is bound by the links' load instead: over a bidirectional ring of ``a`` chips each
    chip's ``1/a`` share for a peer ``d`` hops away crosses ``d`` links, so each link carries, each way,
    ``D(a) / (2a)`` of a chip's buffer ``S``, ``D(a) = ⌊a²/4⌋`` the sum of the ring's distances (the
    book's Question 10: ``N²/8`` of an ``N × N`` array, a quarter of an all-gather's load, whose
    ``S (a-1)/a`` crosses two links each way). Over ``m`` axes of ``a`` chips routed axis by axis
    each axis's links carry the same per-link load, ``m`` times the traffic on ``m`` times the links,
    so the time ``S D(a) / (2a W)`` on links of ``W = B / 2k`` each way is read here as the share
    ``(n-1)/n · a / (k D(a))`` of ``B`` on the all-to-all's ``(n-1)/n · S``: 0.33 on a 4×4×4 TPU v4
    cube where an all-gather gets all of it.

    A slice without wraparound links runs each axis as a line: its end chips receive everything over
    one link, half a ring's bandwidth (the book's profile of a 4-chip v5e axis, sharding.md Pop Quiz
    2: ``3 x 8.4e6 / 4.5e10`` against ``34e6 / 9e10`` with wraparound), and an all-to-all's middle
    link carries twice a ring's: every share is halved.
    """
    if not any_row(numeric(c.get("torus_dims", 0.0)) > 0):  # a switched fabric on every row
        return 1.0
    dims, k, spanned, closed = _torus_axes(c, ranks)
    share = spanned / k
    if op == "all_to_all":
        n = np.maximum(ranks, 1.0)
        a = n ** (1.0 / spanned)
        distances = np.maximum(np.floor(a * a / 4.0 + 1e-9), 1.0)
        # (a group of one rank moves nothing: its share stays the all-gather's, never 0)
        share = np.where(n > 1.0, np.minimum(share, (n - 1.0) / n * a / (k * distances)), share)
    return np.where(dims > 0, np.where(closed, share, 0.5 * share), 1.0)


def torus_hops(c, op, ranks):
    """Latency steps of a collective over ``ranks`` devices on a torus: the hops of its longest path.

    A bidirectional ring over an axis of ``a`` chips, closed by its wraparound link, reaches every
    chip in ``⌈a / 2⌉`` hops, and a collective over several axes takes the sum over them (Austin et
    al., "How to Scale Your Model", part 3, "A note on ICI latency": ``T_min · Σ_i |X_i| / 2``); the
    group spreads evenly over the axes it spans (``a = ranks^(1/m)``). An all-reduce is a
    reduce-scatter and an all-gather, twice the hops; an all-to-all's farthest peer is as far as an
    all-gather's; a send/receive is one hop. A slice without wraparound links walks each axis's line,
    ``a - 1`` hops (the book's 4-chip v5e axis: 3 hops). Where there is no torus, the ring's steps
    (:func:`perfsim.cost.collectives.ring_steps`).

    >>> c = dict(torus_dims=3.0, scaleup_domain=4096.0, devices_per_node=4.0, num_devices=64.0)
    >>> float(torus_hops(c, "all_gather", 64.0)), float(torus_hops(c, "all_reduce", 64.0))
    (6.0, 12.0)
    """
    ranks = np.asarray(ranks, dtype=float)
    ring = ring_steps(op, ranks)
    dims, _, spanned, closed = _torus_axes(c, ranks)
    if not any_row(dims > 0) or op == "send_recv":
        return ring
    per_axis = np.maximum(ranks, 1.0) ** (1.0 / spanned)
    hops = spanned * np.where(closed, np.ceil(per_axis / 2.0 - 1e-9), np.ceil(per_axis - 1e-9) - 1.0)
    return np.where(dims > 0, hops * (2.0 if op == "all_reduce" else 1.0), ring)


def _layout(c, ranks, stride):
    """``(ranks, group, per_node, nodes)`` of a group of ``ranks`` devices placed ``stride`` apart:
    the group's ranks on one node and the nodes it spans."""
    ranks = floats(ranks)
    group = maximum(ranks, 1.0)
    # (np.clip's values, without its dispatch: both bounds are at least 1, so no signed zero to tell apart)
    per_node = minimum(maximum(np.floor(scaleup_domain(c) / maximum(stride, 1.0)), 1.0), group)
    return ranks, group, per_node, np.ceil(ranks / per_node)


def nic_bytes(c, op, size, ranks, stride=1.0):
    """Bytes one device of a group sends over its scale-out NIC in one collective (for the power
    model), laid out as :func:`group_collective` lays it out.

    A group inside a node sends nothing over NICs. Across ``N`` nodes, an all-reduce, all-gather
    or reduce-scatter moves the nodes' buffer among the nodes (bus volume over ``N`` ranks),
    carried by the group's ``g`` devices on each node, each on its own NIC: ``busbw factor(N) x
    size / g`` each (the hierarchical and the node-threaded ring move about the same); an
    all-to-all sends the off-node peers' shares; a send/receive between nodes sends the buffer.

    >>> c = dict(devices_per_node=8.0)
    >>> float(nic_bytes(c, "all_reduce", 8e9, 16)), float(nic_bytes(c, "all_reduce", 8e9, 8))
    (1000000000.0, 0.0)
    """
    return _nic_bytes(op, size, _layout(c, ranks, stride))


def _nic_bytes(op, size, layout):
    """:func:`nic_bytes` of a group laid out as :func:`_layout` gives it."""
    ranks, group, per_node, nodes = layout
    size = floats(size)
    if not any_row(nodes > 1):  # every group inside one node
        return zeros(nodes, size)
    if op == "send_recv":
        sent = size + 0.0 * ranks
    elif op == "all_to_all":
        sent = (ranks - per_node) * size / group
    else:
        sent = bus_factor(op, np.maximum(nodes, 1.0)) * size / per_node
    return where_one((nodes > 1) & (size > 0), sent, 0.0)


def engine_all_reduce(c, size, ranks, stride=1.0):
    """``(applies, time)`` of the runtime's own all-reduce kernel over ``ranks`` devices ``stride``
    apart (runtime ``custom_allreduce_*``; :func:`perfsim.cost.collectives.custom_all_reduce_time`).

    vLLM and SGLang take their custom all-reduce for a group of 2, 4, 6 or 8 ranks on one node whose
    buffer is below ``max_size`` (``CustomAllreduce._SUPPORTED_WORLD_SIZES``, ``in_the_same_node_as``,
    ``should_custom_ar``), NCCL otherwise; TensorRT-LLM's strategy table covers 2, 4 and 8 ranks and
    falls back to NCCL above its workspace. ``applies`` is False where the runtime or the device's
    family gives no kernel (NaN latency), and then ``time`` is not to be read. The node's scale-up
    fabric is taken to join every pair of its devices (NVSwitch): the engines run NCCL on more than
    2 GPUs joined only by PCIe or bridged pairs, which the hardware specs do not yet tell apart.

    >>> c = dict(custom_ar_max=8e6, custom_ar_max_tp2=8e6, custom_ar_lat_s=3e-6, custom_ar_eff=0.5,
    ...          scaleup_bw=450e9, devices_per_node=8.0)
    >>> applies, t = engine_all_reduce(c, 1e6, 2.0)
    >>> bool(applies), round(float(t) * 1e6, 3), bool(engine_all_reduce(c, 1e6, 16.0)[0])
    (True, 7.444, False)
    """
    ranks = floats(ranks)
    size = floats(size)
    limit = where_one(ranks == 2, c.get("custom_ar_max_tp2", 0.0), c.get("custom_ar_max", 0.0))
    latency, eff = numeric(c.get("custom_ar_lat_s", np.nan)), numeric(c.get("custom_ar_eff", np.nan))
    on_node = ranks <= np.floor(numeric(c["devices_per_node"]) / maximum(stride, 1.0))
    applies = ((ranks >= 2) & (ranks <= 8) & (ranks % 2 == 0) & on_node & (size < limit)
               & np.isfinite(latency) & np.isfinite(eff))
    if not any_row(applies):
        return applies, 0.0
    t = custom_all_reduce_time(size, ranks, bandwidth=c["scaleup_bw"], efficiency=np.where(applies, eff, 1.0),
                               latency_s=np.where(applies, latency, 0.0))
    return applies, t


def _engine_kernel(c) -> bool:
    """Whether the runtime gives its own all-reduce kernel on some row (finite ``custom_ar_lat_s`` and
    ``custom_ar_eff``): where none does, :func:`engine_all_reduce` applies nowhere."""
    return any_row(np.isfinite(c.get("custom_ar_lat_s", np.nan)) & np.isfinite(c.get("custom_ar_eff", np.nan)))


def group_collective(c, op, size, ranks, algorithm="auto", stride=1.0):
    """Time of a collective over ``ranks`` devices placed ``stride`` devices apart.

    Ranks are laid out as Megatron-LM orders them: tensor parallel innermost (stride 1), then
    context, data and pipeline parallel, so a data-parallel group has stride ``tp × cp``. Three
    levels of fabric: devices of one package (MI250X's two GCDs, ``node.package``), the node's
    scale-up fabric, and the scale-out network. A group inside a package uses the package link,
    one inside a node the scale-up fabric. A group spanning nodes runs, as NCCL/RCCL do, either
    as rings threaded through every node with one channel per NIC (each device's NIC carries
    its channel's share, the rest of the ring runs on the scale-up fabric; bus bandwidth
    ``min(g · NIC, g/(g-1) · scale-up)`` for ``g`` group ranks per node) or, for all-reduce,
    hierarchically (reduce-scatter in the node, a ring or tree all-reduce across nodes on each
    device's NIC, all-gather in the node); ``auto`` takes the fastest. On a torus (TPU ICI) a collective
    inside the fabric pays its per-step latency once per hop of its longest path (:func:`torus_hops`),
    not once per ring step. All-to-all sends each peer its share:
    off-node shares on the device's NIC while on-node shares use the scale-up fabric. Every collective, inside or across
    nodes, also pays the fixed cost of one collective (``scaleup_base_s``: NCCL's base latency).
    An all-reduce the inference engine runs with its own kernel costs that kernel's time
    (:func:`engine_all_reduce`).
    """
    return _group_collective(c, op, size, ranks, algorithm, stride, _layout(c, ranks, stride))


def collective_and_nic(c, op, size, ranks):
    """``(time, nic)``: :func:`group_collective` and :func:`nic_bytes` of a collective over ``ranks``
    devices placed side by side (stride 1), the group laid out once for both."""
    layout = _layout(c, ranks, 1.0)
    return _group_collective(c, op, size, ranks, "auto", 1.0, layout), _nic_bytes(op, size, layout)


def _group_collective(c, op, size, ranks, algorithm, stride, layout):
    """:func:`group_collective` of a group laid out as :func:`_layout` gives it."""
    t = _library_collective(c, op, size, ranks, algorithm, stride, layout)
    if op != "all_reduce" or algorithm != "auto" or not _engine_kernel(c):
        return t
    applies, engine = engine_all_reduce(c, size, ranks, stride)
    return np.where(applies, engine, t) if any_row(applies) else t


def _library_collective(c, op, size, ranks, algorithm, stride, layout=None):
    """:func:`group_collective` as the collective library (NCCL, RCCL) runs it (``layout``: the group's
    :func:`_layout`, where known)."""
    ranks, group, per_node, nodes = _layout(c, ranks, stride) if layout is None else layout
    stride = maximum(stride, 1.0)
    per_package = minimum(maximum(np.floor(c["package_devices"] / stride), 1.0), group)  # (np.clip's values)
    in_package = (ranks <= per_package) & (c["package_bw"] > 0)
    up_bw = where_one(in_package, c["package_bw"], c["scaleup_bw"] * torus_share(c, ranks, op))
    up = dict(bandwidth=up_bw, efficiency=c["scaleup_eff"], latency_s=c["scaleup_lat_s"],
              ll_latency_s=c["scaleup_ll_s"])
    out = dict(bandwidth=c["scaleout_bw"], efficiency=c["scaleout_eff"], latency_s=c["scaleout_lat_s"],
               ll_latency_s=c["scaleout_ll_s"])
    base = c.get("scaleup_base_s", 0.0)  # absent in hand-made column sets: none
    torus = any_row(numeric(c.get("torus_dims", 0.0)) > 0)
    steps = torus_hops(c, op, ranks) if torus else None  # a switched fabric: the ring's steps
    inside = collective_time(op, size, ranks, nvls_efficiency=c["nvls_eff"], base_latency_s=base, algorithm=algorithm,
                             nvls_latency_s=c.get("nvls_lat_s"), steps=steps, **up)
    if not any_row(nodes > 1):  # every group inside one node: the price across nodes is not read
        return np.where(nodes > 1, 0.0, inside)
    nic = c["scaleout_bw"] * c["scaleout_eff"]
    fabric = c["scaleup_bw"] * c["scaleup_eff"]
    if op == "send_recv":
        across = collective_time(op, size, ranks, **out)
    elif op == "all_to_all":
        share = np.asarray(size, dtype=float) / group
        across = np.maximum((ranks - per_node) * share / nic, (per_node - 1.0) * share / fabric) \
            + (ranks - 1.0) * c["scaleout_lat_s"]
    else:
        ring_bw = np.minimum(per_node * nic, np.where(per_node > 1, per_node / np.maximum(per_node - 1.0, 1.0) * fabric,
                                                     np.inf))
        across = collective_time(op, size, ranks, bandwidth=ring_bw, efficiency=1.0, latency_s=c["scaleout_lat_s"],
                                 ll_latency_s=c["scaleout_ll_s"], algorithm="ring")
        if op == "all_reduce" and algorithm != "ring":
            between = collective_time("all_reduce", size / per_node, nodes, algorithm="tree", **out)
            if algorithm == "auto":  # across nodes the library picks ring or tree
                between = np.minimum(between, collective_time("all_reduce", size / per_node, nodes, algorithm="ring",
                                                              **out))
            hops = torus_hops(c, "all_gather", per_node) if torus else None  # the node's (slice's) part
            hierarchical = (collective_time("reduce_scatter", size, per_node, algorithm="ring", steps=hops, **up)
                            + between + collective_time("all_gather", size, per_node, algorithm="ring", steps=hops, **up))
            across = hierarchical if algorithm == "tree" else np.minimum(across, hierarchical)
    return np.where(nodes > 1, np.where(np.asarray(size) > 0, across + base, 0.0), inside)
