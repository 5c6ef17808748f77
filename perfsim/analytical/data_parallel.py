"""Data-parallel traffic of a training step and the state ZeRO leaves on each device.

Gradient reduction (all-reduce, or reduce-scatter / all-gather under ZeRO), the weight gathers of
fully sharded (ZeRO-3, FSDP) engines, and how the engine cuts them into collectives; the closed
form of :mod:`perfsim.analytical.training` decides what of it hides behind compute.
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.collectives import bus_factor
from perfsim.cost.topology import group_collective, nic_bytes
from perfsim.plan.arguments import Recompute
from perfsim.plan.rows import any_row, maximum, minimum, numeric, where_one, zeros

_FULL = float(Recompute.FULL)  # (a float compares with a column's number without NumPy converting an enum member)


def data_parallel(c, trainable, weights, ranks, stride, n_micro, traffic=None):
    """Gradient sync, parameter gathers and sharded state of one group of weights.

    ``trainable`` and ``weights`` are parameters per device before ZeRO sharding, replicated over
    ``ranks`` data-parallel ranks placed ``stride`` devices apart. ZeRO shards optimizer state
    (stage 1), gradients (2) and weights (3) over groups of ``shard = min(zero_shard_size, ranks)``
    and replicates across the ``ranks / shard`` groups (hybrid sharding: HSDP, ZeRO++). Traffic:

    * stage 0: all-reduce of the gradients over all ranks, once per step;
    * stage 1: reduce-scatter in the group and all-reduce of the shard across groups, once per
      step, then an all-gather of the updated weights in the group;
    * stage 2: the same, but the gradients are reduced every micro-batch (no full gradient buffer
      is kept to accumulate into);
    * stage 3: as stage 2, plus an all-gather of the weights before the forward and again before
      the backward of every micro-batch (no post-step gather). Under full recompute the backward's
      gather serves the recomputed forward; an engine that releases a unit's weights after that
      forward when their next use lies more than ``gather_reuse_params`` parameters of the trace
      ahead (DeepSpeed's ``stage3_max_reuse_distance``) gathers them a third time for the backward
      proper: in a layer of ``P`` parameters the units after which the rest of the recomputed
      forward and its backward hold at least that many, a share ``1 - reuse / (2 P)`` of the layer.

    Each is issued as the engine cuts it (gather units per layer, gradient buckets), every
    collective paying its own latency: at thousands of ranks a ring's ``(N - 1)`` steps make many
    small collectives latency-bound while the bytes per device stay the same.

    An engine whose weight gathers take a list of one tensor per rank (``rank_copies``: PyTorch's
    list ``all_gather`` copies every rank's chunk out of a flat buffer as an op of its own) launches
    ``ranks`` copies per gather from the host thread, at the launch cost per op, between a
    synchronisation of the device and the compute the gather precedes: ``host_per_micro_s`` and
    ``host_per_step_s``, time the device waits. (Its list reduce-scatters copy as many chunks in,
    launched while the device runs the backward that produced them: not priced.)

    Returns ``per_micro_s`` (traffic of every micro-batch), ``per_step_s`` (once per step), those
    host costs and the per-device state that remains after sharding. ``traffic``: :func:`dp_traffic`
    of the same arguments, where the caller has it.
    """
    t = dp_traffic(c, trainable, weights, ranks, stride) if traffic is None else traffic
    zero, shard, weight_bytes = c["zero"], t["shard"], t["weight_bytes"]
    # gathers per micro-batch under ZeRO-3: forward, backward, and the recompute's re-gather
    reuse = c["gather_reuse_params"]
    layer_weights = maximum(weights / maximum(c["stage_layers"], 1.0), 1.0)
    regather = np.where((c["recompute"] == _FULL) & (reuse > 0),
                        np.clip(1.0 - reuse / (2.0 * layer_weights), 0.0, 1.0), 0.0)
    gathers = 2.0 + regather

    def by_stage(sharded, full, gather):  # (every micro-batch, once per step) of one quantity
        per_micro = where_one(zero >= 3, sharded + gathers * gather, where_one(zero == 2, sharded, 0.0))
        per_step = where_one(zero == 0, full, where_one(zero == 1, sharded + gather, where_one(zero == 2, gather, 0.0)))
        return per_micro, per_step

    per_micro, per_step = by_stage(*t["seconds"])
    host_micro, host_step = by_stage(0.0, 0.0, t["host_gather_s"])
    sent_micro, sent_step = by_stage(*t["sent"])
    nic_micro, nic_step = by_stage(*t["nic"])
    return {"per_micro_s": per_micro, "per_step_s": per_step, "host_per_micro_s": host_micro, "host_per_step_s": host_step,
            "sent_bytes": n_micro * sent_micro + sent_step,
            "nic_bytes": n_micro * nic_micro + nic_step,
            "optimizer_params": trainable / where_one(zero >= 1, shard, 1.0),
            "grad_bytes": t["grad_bytes"] / where_one(zero >= 2, shard, 1.0),
            "weight_bytes": weight_bytes / where_one(zero >= 3, shard, 1.0)}


def dp_traffic(c, trainable, weights, ranks, stride):
    """The collectives of :func:`data_parallel` that do not depend on the recomputation: ``seconds``,
    ``sent`` and ``nic`` (time, bytes each device sends, the part over its NIC) of the sharded
    gradient reduction, the full one and one weight gather, as ``(sharded, full, gather)``, and the
    host time of one gather's list copies (``host_gather_s``)."""
    zero = c["zero"]
    shard = minimum(c["zero_shard_size"], ranks)
    grad_bytes = trainable * c["grad_bytes"]
    weight_bytes = weights * c["w_bytes"]
    # the engine issues this traffic as many collectives, each paying its own latency: weights
    # gathered per unit (``gathers_per_layer`` per layer of the stage), gradients reduced in
    # buckets (Megatron-core: max(40M, 1M x dp) parameters, "so collectives do not become
    # latency-bound"); a fully sharded engine without buckets reduce-scatters per unit
    units = maximum(c["stage_layers"], 1.0) * c["gathers_per_layer"]
    bucket = maximum(c["grad_bucket_params"], c["grad_bucket_per_rank"] * ranks)
    buckets = where_one(bucket > 0, maximum(np.ceil(trainable / maximum(bucket, 1.0)), 1.0), 1.0)
    reductions = where_one((zero >= 3) & (c["grad_bucket_params"] <= 0), units, buckets)

    def collective(op, size, n, stride, count):
        if not any_row(numeric(n) > 1):  # one rank on every row: the collective costs 0 (count is finite)
            return zeros(count, size, n, stride)
        return count * group_collective(c, op, size / count, n, stride=stride)

    gather = collective("all_gather", weight_bytes, shard, stride, where_one(zero >= 3, units, buckets))
    seconds = (collective("reduce_scatter", grad_bytes, shard, stride, reductions)
               + collective("all_reduce", grad_bytes / shard, ranks / shard, stride * shard, reductions),
               collective("all_reduce", grad_bytes, ranks, stride, buckets), gather)
    # list all-gathers: one copy per rank of every weight gather, launched by the host
    copies = c["rank_copies"] * where_one((shard > 1) & (weight_bytes > 0), shard, 0.0) * c["launch_s"]
    # bytes each device sends (nccl-tests bus volume), for the power model
    sent = (grad_bytes * bus_factor("reduce_scatter", shard)
            + grad_bytes / shard * bus_factor("all_reduce", maximum(ranks / shard, 1.0)),
            grad_bytes * bus_factor("all_reduce", maximum(ranks, 1.0)),
            weight_bytes * bus_factor("all_gather", maximum(shard, 1.0)))
    # the part of it each device sends over its scale-out NIC
    nic = (nic_bytes(c, "reduce_scatter", grad_bytes, shard, stride=stride)
           + nic_bytes(c, "all_reduce", grad_bytes / shard, ranks / shard, stride=stride * shard),
           nic_bytes(c, "all_reduce", grad_bytes, ranks, stride=stride),
           nic_bytes(c, "all_gather", weight_bytes, shard, stride=stride))
    return {"shard": shard, "grad_bytes": grad_bytes, "weight_bytes": weight_bytes, "seconds": seconds, "sent": sent,
            "nic": nic, "host_gather_s": copies * where_one(zero >= 3, units, buckets)}
