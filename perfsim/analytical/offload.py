"""Offloading plans: state kept in host memory or on NVMe, streamed to the device as it is needed.

Inference (FlexGen, Sheng et al. ICML'23; DeepSpeed ZeRO-Inference, Aminabadi et al. SC'22).
Weights, KV cache and activations are split over the device, host memory (``cpu``) and NVMe by
the ``offload_*`` fractions. Every forward pass (the prefill, then each decode step) walks the
layers once; the offloaded part of each layer's weights crosses the host link once per pass
and serves the whole batch (FlexGen's zig-zag block schedule: one weight load per layer for
every GPU batch of the block), so a large batch amortises it. Per layer, the next layer's
transfer overlaps the current layer's compute where the engine prefetches
(:func:`perfsim.cost.tiers.overlapped`): the pass takes ``max(compute, transfer)`` per layer
plus the first layer's transfer. A block split into GPU batches (``micro_batch`` sequences each,
FlexGen's gpu batch) overlaps the next layer's load with the first GPU batch only, as FlexGen's
loop syncs after every (layer, GPU batch) step; the device holds one GPU batch's activations at a
time. Compute is priced for the whole batch at once. Offloaded KV cache is either

* loaded to the device every decode step (the cached keys and values cross the host link), or
* read in place by attention on the host CPU (FlexGen's CPU delegation, ZeRO-Inference's KV
  offload): only the query goes to the host and the attention output back; the host's
  memory bandwidth, with the engine's bytes moved per cached byte, sets its time.

Where the engine can do both, the faster is taken; ``breakdown.decode.cpu_attention`` says
which (1: on the CPU). Engines with pageable host buffers (not pinned) stage every copy with
the host thread, which then cannot compute attention at the same time.

Training (ZeRO-Offload, Ren et al. ATC'21; ZeRO-Infinity, Rajbhandari et al. SC'21): see
:func:`train_times`. An offloaded optimizer steps on the host CPU, its gradients leave the
device during the backward and the updated 16-bit weights come back; offloaded weights are
fetched layer by layer for the forward and again for the backward; offloaded activation
checkpoints go out in the forward and come back in the backward. Transfers overlap the
compute of their pass where the engine prefetches; the optimizer step does not overlap compute,
but the host's share of it runs while the device steps its own (DeepSpeed's partial offload).

Memory: the ``memory_per_device_gib`` keys hold what stays on the device (plus the double
buffers the streamed layers pass through, under ``other``); ``offloaded_per_device_gib`` holds
what one device keeps in host memory and on NVMe, and ``memory_per_tier_gib`` the totals
(``gpu`` per device, ``cpu`` and ``nvme`` per node: all devices of a node share them).
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.tiers import (
    devices_on_node,
    duration,
    host_attention_traffic,
    host_compute_time,
    host_link_bandwidth,
    host_memory_bandwidth,
    overlapped,
    tier_traffic,
    transfer_time,
)
from perfsim.graph.transformer import kv_bytes_per_token
from perfsim.plan.rows import Detail, any_row, maximum, minimum, where_one
from perfsim.specs.units import GIB


def _fractions(c, prefix):
    """``(gpu, cpu, nvme)`` shares of one kind of state (arrays)."""
    cpu, nvme = c[f"{prefix}_frac_cpu"], c[f"{prefix}_frac_nvme"]
    return 1.0 - cpu - nvme, cpu, nvme


def _streams(c, *, load_cpu=0.0, load_nvme=0.0, store_cpu=0.0, store_nvme=0.0, nvme_to_host=0.0, kv_load_cpu=0.0,
             kv_store_cpu=0.0, kv_load_nvme=0.0, kv_store_nvme=0.0, hidden_stored=0.0):
    """Time of one pass's transfers (s) and the bytes they move on each resource
    (:func:`perfsim.cost.tiers.tier_traffic`'s keys; ``host``: host-memory bytes).

    Loads to and stores from the device (:func:`perfsim.cost.tiers.tier_traffic`), plus NVMe
    data the host itself reads (``nvme_to_host``: a cache the CPU attends over). Pinned host
    buffers are read and written by DMA alone; pageable ones are first copied by the host thread
    into the driver's pinned staging buffer (read and written once more), and that copy runs
    before the DMA of the same bytes, so it adds its time instead of overlapping it (CUDA
    programming guide, 'Page-Locked Host Memory'; the NVMe paths of offloading engines read into
    their own pinned buffers). The driver makes that copy on the one host thread that asked for
    the transfer (``driver_staging``: a plain ``tensor.to(device)`` from pageable memory), at the
    rate one thread copies (``thread_copy_bw``, where the spec gives it); an engine that copies
    into pinned buffers itself with multi-threaded copies stages at the host's memory bandwidth. ``kv_load_*`` and ``kv_store_*`` are KV-cache bytes among the loads
    and stores: the cache's buffer is pinned or not on its own (``kv_pinned``; an engine with a
    pageable cache copies the part on NVMe through the same relay: FlexGen's copy threads,
    pytorch_backend.py copy_worker_func), and an engine whose cache stores take a slower path than the link
    (``kv_store_bw``; FlexGen's pass through host memory to either tier) stores it at that rate,
    concurrently with the other streams; likewise the hidden states among the stores
    (``hidden_stored`` bytes, at ``hidden_store_bw``), one after the other on the engine's store
    path (FlexGen's cost model adds the two: experimental/cost_model.py, gtoc terms). An engine
    that reads NVMe data into a relay buffer and only then copies it to the device
    (``nvme_relay``: FlexGen's copy threads) adds the read and the copy of those bytes.
    """
    load_cpu, store_cpu = load_cpu + kv_load_cpu, store_cpu + kv_store_cpu
    load_nvme, store_nvme = load_nvme + kv_load_nvme, store_nvme + kv_store_nvme
    t = tier_traffic(c, load_cpu=load_cpu, load_nvme=load_nvme, store_cpu=store_cpu, store_nvme=store_nvme)
    t["nvme_read"] = t["nvme_read"] + nvme_to_host
    t["host"] = t["host"] + nvme_to_host
    kv_host = kv_load_cpu + kv_store_cpu
    staged = 2.0 * ((1.0 - c["host_pinned"]) * (load_cpu + store_cpu - kv_host)
                    + (1.0 - c["kv_pinned"]) * (kv_host + kv_load_nvme + kv_store_nvme))
    t["host"] = t["host"] + staged
    bandwidth = host_memory_bandwidth(c)
    one_thread = (c["driver_staging"] > 0) & (c["thread_copy_bw"] > 0)
    staging = np.where(one_thread, duration(staged / 2.0, c["thread_copy_bw"]),
                       np.where(bandwidth > 0, duration(staged, bandwidth), 0.0))  # (unknown host memory: not priced)
    stores = np.where(c["kv_store_bw"] > 0, duration(kv_store_cpu + kv_store_nvme, c["kv_store_bw"]), 0.0) \
        + np.where(c["hidden_store_bw"] > 0, duration(hidden_stored, c["hidden_store_bw"]), 0.0)
    relay = np.where(c["nvme_relay"] > 0, duration(load_nvme, c["nvme_bw"] / devices_on_node(c))
                     + duration(load_nvme, host_link_bandwidth(c)), 0.0)
    return np.maximum(np.maximum(transfer_time(c, **t), relay) + staging, stores), t


def _nvme(traffic):
    """Bytes a pass's transfers read from and write to NVMe (:func:`_streams`)."""
    return traffic["nvme_read"] + traffic["nvme_write"]


def _weight_tiers(c, weights, experts):
    """Where one device's weights sit: ``(gpu, cpu, nvme)`` bytes, with the routed experts
    (``experts`` bytes of the ``weights``) placed by ``offload_experts`` (as the other weights
    where it is not given)."""
    wg, wc, wn = _fractions(c, "w")
    eg, ec, en = _fractions(c, "exp")
    dense = weights - experts
    return dense * wg + experts * eg, dense * wc + experts * ec, dense * wn + experts * en


def _streamed(c, weights, experts):
    """Weight bytes one pass streams from host memory and from NVMe, layer by layer and
    prefetched: the offloaded share of every weight, except routed experts behind an expert
    cache (``offload_experts`` given), which are fetched only when the router picks them."""
    _, cpu, nvme = _weight_tiers(c, weights, experts)
    cached = c["exp_given"] > 0
    return cpu - np.where(cached, experts * c["exp_frac_cpu"], 0.0), \
        nvme - np.where(cached, experts * c["exp_frac_nvme"], 0.0)


def expert_fetch(c, touched):
    """Time one pass waits for routed experts its cache misses (s), and the bytes it reads from
    NVMe for them.

    ``touched`` is the bytes of the distinct experts the pass's tokens route to (per device).
    An expert cache on the device holds the ``gpu`` share of the experts; a routed expert is
    found there with probability ``expert_hit_rate`` (by default that share: a balanced router
    picks cached and uncached experts alike). A miss is known only once the router has run, so
    its transfer cannot be prefetched behind earlier layers and adds to the pass (MoE offloading
    engines such as Mixtral-offloading and MoE-Infinity fetch on demand into an LRU cache).
    """
    cached = c["exp_given"] > 0
    cpu, nvme = c["exp_frac_cpu"], c["exp_frac_nvme"]
    off = cpu + nvme
    hit = np.where(np.isnan(c["expert_hit_rate"]), 1.0 - off, c["expert_hit_rate"])
    miss = np.where(cached & (off > 0), touched * (1.0 - hit), 0.0)
    if not any_row(miss > 0):  # nothing fetched on any row: no wait, and the bytes below (0, or NaN)
        return np.where(miss > 0, 0.0, 0.0), 0.0 * miss
    share = np.where(off > 0, cpu / np.where(off > 0, off, 1.0), 0.0)
    t, traffic = _streams(c, load_cpu=miss * share, load_nvme=miss * (1.0 - share))
    return np.where(miss > 0, t, 0.0), _nvme(traffic)


def gpu_batches(c, seqs, *, weights, experts, working_set, kv_per_seq, hidden_per_seq):
    """GPU batches one replica's block of ``seqs`` sequences runs as, in an offloaded plan.

    ``micro_batch`` sequences each where the plan gives it (FlexGen's GPU batch). Otherwise an
    engine with a block schedule (``block_schedule``) takes the fewest GPU batches whose working
    set fits the device beside what stays there: its share of the weights, KV cache and parked
    hidden states, and the double buffers of the streamed layers (FlexGen's policy search holds
    each GPU batch's peak memory within the GPU, Sheng et al. 2023, Sec. 4.1). An engine without
    one runs the whole batch at once. FlexGen syncs after each (layer, GPU batch) step, so the
    next layer's weights load while only the first GPU batch computes.

    Parameters
    ----------
    weights, experts : array_like
        Weight bytes on the device (all tiers), and the routed experts' part of them.
    working_set, kv_per_seq, hidden_per_seq : array_like
        Bytes per sequence: the transient tensors of one layer's pass, its KV cache (all layers),
        the hidden state kept between layers.
    """
    layers = maximum(c["stage_layers"], 1.0)
    kg, kc, kn = _fractions(c, "kv")
    ag = _fractions(c, "act")[0]
    on_device, cpu, nvme = _weight_tiers(c, weights, experts)
    # two layers of every weight that is not on the device pass through double buffers, streamed
    # or fetched
    resident = on_device + 2.0 * (cpu + nvme) / layers + seqs * (kv_per_seq * kg + hidden_per_seq * ag)
    per_seq = working_set * (1.0 + c["fragmentation"]) + 2.0 * kv_per_seq / layers * (kc + kn)
    fit = np.floor(maximum(c["capacity_bytes"] * c["gpu_memory_utilization"] - resident, 0.0) / per_seq)
    offloaded = c["offloaded"] > 0
    given = ~np.isnan(c["gpu_batch"])
    # (where not even one sequence fits, the plan is infeasible: priced as one batch)
    auto = offloaded & ~given & (c["block_schedule"] > 0) & (fit >= 1.0)
    per_batch = where_one(offloaded & given, minimum(c["gpu_batch"], seqs),
                         where_one(auto, minimum(fit, seqs), seqs))
    return np.ceil(seqs / maximum(per_batch, 1.0))


def inference_times(c, prefill, decode, pre, dec, weights, batches, *, experts=0.0, touched=(0.0, 0.0)):
    """Add offloading to one replica's prefill (``pre``) and mean decode step (``dec``) in place.

    Parameters
    ----------
    c : dict
        Columns (fractions ``w_frac_*``, ``kv_frac_*``, ``act_frac_*``; engine and tier columns).
    prefill, decode : Pass
        Shapes of the two passes.
    pre, dec : dict
        Price dicts of the passes (:func:`perfsim.analytical.inference.forward_time`); gain
        ``offload_s`` (transfer the compute does not hide), ``host_attention_s`` (attention run
        on the host CPU), ``transfer_s`` (all transfer time, hidden or not) and ``nvme_bytes``
        (read from and written to NVMe, for the power model), and their
        ``total_s`` and ``attention_s`` are updated.
    weights : array_like
        Weight bytes on the busiest device.
    batches : array_like
        GPU batches of the block (:func:`gpu_batches`).
    experts, touched : array_like
        The routed experts' bytes among ``weights``, and those the prefill's and a decode step's
        tokens route to (:func:`expert_fetch`).

    Returns
    -------
    dict
        ``breakdown.decode.cpu_attention``: 1 where the decode attention over the offloaded KV
        cache runs on the host CPU, else 0.
    """
    if not _placed(c):
        return _resident(c, pre, dec, batches)  # nothing leaves the device on any row
    layers = c["stage_layers"]
    prefetch = c["offload_prefetch"] / batches
    decode_prefetch = c["decode_prefetch"] / batches  # (an engine may overlap less in the decode)
    stream_cpu, stream_nvme = _streamed(c, weights, experts)
    (fetch_pre, fetched_pre), (fetch_dec, fetched_dec) = (expert_fetch(c, t) for t in touched)
    _, kc, kn = _fractions(c, "kv")
    _, ac, an = _fractions(c, "act")
    kv_layer_token = kv_bytes_per_token(c)
    hidden_token = c["hidden"] * c["act_bytes"]

    # prefill: stream the offloaded weights, store the prompt's KV cache, move hidden states
    hidden = layers * prefill.tokens * hidden_token
    prompt_kv = layers * prefill.tokens * kv_layer_token
    t_pre, pre_traffic = _streams(c, load_cpu=stream_cpu + hidden * ac, load_nvme=stream_nvme + hidden * an,
                                  store_cpu=hidden * ac, kv_store_cpu=prompt_kv * kc,
                                  kv_store_nvme=prompt_kv * kn, store_nvme=hidden * an, hidden_stored=hidden * (ac + an))
    compute = pre["total_s"] - pre["overhead_s"]
    pre["offload_s"] = overlapped(compute, t_pre, layers, prefetch) - compute + fetch_pre
    pre["host_attention_s"] = 0.0 * pre["offload_s"]
    pre["transfer_s"] = t_pre + fetch_pre
    pre["nvme_bytes"] = _nvme(pre_traffic) + fetched_pre
    pre["total_s"] = pre["total_s"] + pre["offload_s"]

    # decode step: the whole cache is read once per step (mean context), one new token stored
    seqs = decode.seqs
    hidden = layers * seqs * hidden_token
    cache = layers * seqs * decode.kv_len * kv_layer_token
    new_kv = layers * seqs * kv_layer_token
    compute = dec["total_s"] - dec["overhead_s"]
    # (a) attention on the device: the offloaded cache is loaded every step
    t_dev, dev_traffic = _streams(c, load_cpu=stream_cpu + hidden * ac, kv_load_cpu=cache * kc,
                                  load_nvme=stream_nvme + hidden * an, kv_load_nvme=cache * kn, store_cpu=hidden * ac,
                                  kv_store_cpu=new_kv * kc, kv_store_nvme=new_kv * kn, store_nvme=hidden * an,
                                  hidden_stored=hidden * (ac + an))
    on_device = overlapped(compute, t_dev, layers, decode_prefetch)
    # (b) attention over the offloaded cache on the host CPU: the query goes out and the output
    # comes back; the host moves the engine's bytes per cached byte (copies of the cache included)
    off = kc + kn
    qo = layers * seqs * c["heads"] / c["tp"] * c["head_dim"] * c["act_bytes"] * np.where(off > 0, 1.0, 0.0)
    host_cache = cache * off
    attention_bytes = host_cache * host_attention_traffic(c)
    host_s = host_compute_time(c, 2.0 * host_cache / c["kv_bytes"] * c["heads"] / np.maximum(c["kv_heads"], 1.0),
                               attention_bytes)
    t_host, host_traffic = _streams(c, load_cpu=stream_cpu + hidden * ac + qo, load_nvme=stream_nvme + hidden * an,
                                    store_cpu=hidden * ac + qo, kv_store_cpu=new_kv * kc, kv_store_nvme=new_kv * kn,
                                    store_nvme=hidden * an, nvme_to_host=cache * kn, hidden_stored=hidden * (ac + an))
    saved = dec["attention_s"] * off
    gpu_compute = compute - saved
    # pinned: host attention, device compute and DMA overlap, but the attention and the DMA
    # share host memory; pageable: the host thread stages copies and attends in turn
    shared = attention_bytes + host_traffic["host"]
    contended = duration(shared, host_memory_bandwidth(c))
    on_host = np.where(c["host_pinned"] > 0,
                       np.maximum(overlapped(gpu_compute + host_s, t_host, layers, decode_prefetch), contended),
                       host_s + overlapped(gpu_compute, t_host, layers, decode_prefetch))
    mode = c["cpu_attention"]  # 0: on the device, 1: on the host, 2: the faster
    use_host = (off > 0) & np.isfinite(on_host) & ((mode == 1) | ((mode == 2) & (on_host < on_device)))
    timed = np.where(use_host, on_host, on_device) + fetch_dec
    moved = np.where(use_host, host_s - saved, 0.0)  # attention work moved from the device to the host
    dec["attention_s"] = dec["attention_s"] - np.where(use_host, saved, 0.0)
    dec["host_attention_s"] = np.where(use_host, host_s, 0.0)
    dec["offload_s"] = timed - (compute + moved)
    dec["transfer_s"] = np.where(use_host, t_host, t_dev) + fetch_dec
    dec["nvme_bytes"] = np.where(use_host, _nvme(host_traffic), _nvme(dev_traffic)) + fetched_dec
    dec["total_s"] = dec["total_s"] + moved + dec["offload_s"]
    return {"breakdown.decode.cpu_attention": np.where(use_host, 1.0, 0.0), "host_compute": (mode == 1) & (off > 0),
            "gpu_batches": batches}


def _placed(c) -> bool:
    """Whether any row places any state (weights, KV cache, activations, routed experts) off the device."""
    # (NaN counts: it is not 0; a number's truth read without a NumPy call)
    return any(any_row(c[f"{prefix}_frac_{tier}"] != 0) for prefix in ("w", "kv", "act", "exp")
               for tier in ("cpu", "nvme"))


def _resident(c, pre, dec, batches):
    """:func:`inference_times` where every row keeps all its state on the device: no stream moves a
    byte (each takes 0 s), nothing is fetched, attention stays on the device. The passes gain the
    same keys, with the values the streams' formulas give for no bytes (``offload_s`` is
    ``compute - compute``: 0, or NaN where the compute time is unknown or infinite)."""
    pre_compute = pre["total_s"] - pre["overhead_s"]
    dec_compute = dec["total_s"] - dec["overhead_s"]
    none = np.zeros(np.broadcast(pre_compute, dec_compute, c["kv_frac_cpu"], c["stage_layers"]).shape)
    for parts, compute in ((pre, pre_compute), (dec, dec_compute)):
        parts["offload_s"] = compute - compute
        parts["host_attention_s"] = 0.0 * parts["offload_s"] if parts is pre else none
        parts["transfer_s"] = none
        parts["nvme_bytes"] = none
        parts["total_s"] = parts["total_s"] + parts["offload_s"]
    return {"breakdown.decode.cpu_attention": none, "host_compute": none > 0, "gpu_batches": batches}


def inference_memory(c, weights, kv, activations, hidden, timing, experts=0.0):
    """Split one device's weights, KV cache and activations (bytes) over the tiers; ``timing`` is
    what :func:`inference_times` returned (where the decode attention runs, GPU batches).

    ``activations`` is the working set of the whole batch's pass; the device holds that of one
    GPU batch at a time, and it cannot leave the device (the kernels read it). In an offloaded
    plan the block's hidden states (``hidden`` bytes) wait between layers for their GPU batch:
    ``offload_activations`` places those (FlexGen's activation placement). ``experts`` is the
    routed experts' part of ``weights``, placed by ``offload_experts``.

    Returns a dict: ``gpu`` (the device-resident part of each kind), ``staging`` (device double
    buffers that streamed layers pass through: two layers of offloaded weights, and two layers
    of one GPU batch's offloaded cache where attention runs on the device), ``host`` and
    ``nvme`` (bytes of each kind one device keeps there; ``host["other"]`` holds the bounce
    buffers of NVMe streams).
    """
    cpu_attention = timing["breakdown.decode.cpu_attention"]
    batches = timing["gpu_batches"]
    layers = maximum(c["stage_layers"], 1.0)
    parked = where_one(c["offloaded"] > 0, hidden, 0.0)
    gpu, host, nvme = {}, {}, {}
    gpu["weights"], host["weights"], nvme["weights"] = _weight_tiers(c, weights, experts)
    for kind, amount, prefix in (("kv_cache", kv, "kv"), ("activations", parked, "act")):
        g, h, n = _fractions(c, prefix)
        gpu[kind], host[kind], nvme[kind] = amount * g, amount * h, amount * n
    gpu["activations"] = gpu["activations"] + activations / batches
    # (an engine's host cache may hold wider elements than the KV dtype: fp32 buffers)
    host["kv_cache"] = host["kv_cache"] * where_one(c["host_kv_bytes"] > 0, c["host_kv_bytes"] / c["kv_bytes"], 1.0)
    _, kc, kn = _fractions(c, "kv")
    # double buffers: two layers of the weights off the device (streamed or fetched), two of one
    # GPU batch's cache where the device attends over an offloaded cache
    staging = 2.0 * (host["weights"] + nvme["weights"]) / layers \
        + where_one(cpu_attention > 0, 0.0, 2.0 * kv / layers / batches * (kc + kn))
    bounce = 1.0 - c["nvme_direct"]
    host["other"] = 2.0 * bounce * nvme["weights"] / layers + 2.0 * kv / layers * kn * where_one(cpu_attention > 0,
                                                                                               1.0, bounce)
    return {"gpu": gpu, "staging": staging, "host": host, "nvme": nvme, "host_compute": timing["host_compute"]}


def tier_results(c, device_total, tiers):
    """Result keys and feasibility checks of the host and NVMe tiers.

    ``tiers["host"]`` and ``tiers["nvme"]`` map kinds of state to bytes one device keeps there;
    ``tiers["host_compute"]`` (optional) marks rows whose plan computes on the host CPU. A node's
    devices share its host memory (``host_memory_gib``) and NVMe (``nvme_capacity_gib``, unchecked
    where the spec does not give it); a plan that overflows either, offloads to a tier the spec
    lacks, or computes on a host CPU the spec does not describe, is infeasible with
    the tier named.
    """
    host, nvme = tiers["host"], tiers["nvme"]
    per_node = devices_on_node(c)
    host_total = sum(host.values())
    nvme_total = sum(nvme.values())
    out = {"memory_per_tier_gib.gpu": device_total / GIB,
           "memory_per_tier_gib.cpu": host_total * per_node / GIB,
           "memory_per_tier_gib.nvme": nvme_total * per_node / GIB}
    for tier, kinds, total in (("cpu", host, host_total), ("nvme", nvme, nvme_total)):
        for kind, value in kinds.items():
            out[f"offloaded_per_device_gib.{tier}.{kind}"] = value / GIB
        out[f"offloaded_per_device_gib.{tier}.total"] = total / GIB
    host_node, nvme_node = host_total * per_node, nvme_total * per_node
    uses_host = host_total > 0
    uses_nvme = nvme_total > 0
    cap_host, cap_nvme = c["host_memory_bytes"], c["nvme_capacity_bytes"]
    checks = [
        (uses_host & (c["host_link_bw"] <= 0), "no host link to offload over (node.host_link in the hardware spec)",
         None),
        (uses_nvme & (c["nvme_bw"] <= 0), "no nvme tier in the hardware spec (node.nvme_bandwidth_gb_s)", None),
        (np.asarray(tiers.get("host_compute", False)) & ((c["cpu_bw"] <= 0) | (c["cpu_flops"] <= 0)),
         "host compute on the cpu tier (optimizer step, attention) needs the host CPU's numbers (node.cpu in the "
         "hardware spec)", None),
        (uses_host & (host_node > cap_host), "cpu tier overflows: host memory is too small",
         Detail("cpu tier overflows: {:.1f} GiB of host memory needed per node, {:.1f} GiB in "
                "node.host_memory_gib", host_node, cap_host, per=GIB)),
        (uses_nvme & (cap_nvme > 0) & (nvme_node > cap_nvme), "nvme tier overflows: NVMe capacity is too small",
         Detail("nvme tier overflows: {:.1f} GiB of NVMe needed per node, {:.1f} GiB in "
                "node.nvme_capacity_gib", nvme_node, cap_nvme, per=GIB)),
    ]
    return out, checks


#: floating-point operations of one Adam update per parameter (moments, bias corrections, square
#: root, division, weight decay, the 16-bit copy): DeepSpeed's vectorised CPU Adam does about a
#: dozen per element (csrc/adam/cpu_adam_impl.h, Step_AVX)
_ADAM_FLOPS = 12.0


def train_times(c, *, weight_bytes, grad_bytes, optimizer_params, state_bytes, activation_bytes, forward_s,
                backward_s, micro_batches, optimizer_traffic, device_optimizer_s):
    """Exposed time of an offloaded training step and where it goes.

    Parameters
    ----------
    c : dict
        Columns (fractions ``w_``, ``grad_``, ``opt_``, ``act_frac_*``; engine and tier columns).
    weight_bytes, grad_bytes : array_like
        Weight and gradient bytes per device after ZeRO sharding.
    optimizer_params : array_like
        Parameters whose optimizer state the device owns.
    state_bytes : array_like
        Optimizer-state bytes per parameter (fp32 master weights and two moments: 12).
    activation_bytes : array_like
        Activations one micro-batch keeps for its backward (bytes).
    forward_s, backward_s : array_like
        Compute of one micro-batch's forward and backward on one stage (s).
    micro_batches : array_like
        Micro-batches per step.
    optimizer_traffic : float
        Bytes the Adam step moves per parameter (the same wherever it runs).
    device_optimizer_s : array_like
        The optimizer step of all the device's parameters on the device (s).

    Returns
    -------
    dict
        ``optimizer_s`` (the device's share of the optimizer step), ``host_optimizer_s`` (the
        host's Adam step with its NVMe and weight-return streams; it runs while the device steps
        its own share, as DeepSpeed's partial offload does), ``offload_s`` (exposed transfers
        per step plus the host step beyond the device's), ``transfer_s`` (all transfer time of
        the step, hidden or not), and for the power model ``host_cpu_s`` (the host CPUs' Adam
        time) and ``nvme_bytes`` (read from and written to NVMe in the step).
    """
    layers = np.maximum(c["stage_layers"], 1.0)
    prefetch = c["offload_prefetch"]
    _, wc, wn = _fractions(c, "w")
    _, gc, gn = _gradient_fractions(c)
    og, oc, on = _fractions(c, "opt")
    _, ac, an = _fractions(c, "act")
    every_micro = c["zero"] >= 2  # ZeRO-2/3 reduce (and move) gradients every micro-batch
    grads_micro = np.where(every_micro, grad_bytes, 0.0)
    grads_step = np.where(every_micro, 0.0, grad_bytes)
    # forward: fetch offloaded weights, send activation checkpoints out
    t_fwd, fwd_traffic = _streams(c, load_cpu=weight_bytes * wc, load_nvme=weight_bytes * wn,
                        store_cpu=activation_bytes * ac, store_nvme=activation_bytes * an)
    # backward: fetch weights again and the checkpoints back, send gradients out
    t_bwd, bwd_traffic = _streams(c, load_cpu=weight_bytes * wc + activation_bytes * ac,
                        load_nvme=weight_bytes * wn + activation_bytes * an,
                        store_cpu=grads_micro * gc, store_nvme=grads_micro * gn)
    exposed_micro = (overlapped(forward_s, t_fwd, layers, prefetch) - forward_s
                     + overlapped(backward_s, t_bwd, layers, prefetch) - backward_s)
    # step: remaining gradients out, the host Adam step (states streamed from NVMe where they
    # live there) and the updated 16-bit weights back, pipelined in chunks (ZeRO-Infinity)
    off = oc + on
    host_params = optimizer_params * off
    adam = host_compute_time(c, host_params * _ADAM_FLOPS, host_params * optimizer_traffic)
    adam = np.where(host_params > 0, adam, 0.0)
    returned = optimizer_params * off * c["w_bytes"] * (1.0 - wc - wn)
    # (a device optimizer reads offloaded gradients back)
    t_states, state_traffic = _streams(c, store_cpu=grads_step * gc, store_nvme=grads_step * gn,
                           load_cpu=returned + grad_bytes * gc * og, load_nvme=grad_bytes * gn * og)
    nvme_states = optimizer_params * on * state_bytes
    t_nvme = transfer_time(c, nvme_read=nvme_states, nvme_write=nvme_states, host=2.0 * nvme_states)
    host_step = np.maximum(np.maximum(adam, t_nvme), t_states)
    device_step = device_optimizer_s * og
    offload_s = micro_batches * exposed_micro + np.maximum(host_step - device_step, 0.0)
    nvme = micro_batches * (_nvme(fwd_traffic) + _nvme(bwd_traffic)) + _nvme(state_traffic) + 2.0 * nvme_states
    return {"optimizer_s": device_step, "host_optimizer_s": host_step, "offload_s": offload_s,
            "transfer_s": micro_batches * (t_fwd + t_bwd) + np.maximum(t_states, t_nvme),
            "host_cpu_s": adam, "nvme_bytes": nvme}


def _gradient_fractions(c):
    """``(gpu, cpu, nvme)`` shares of the gradients: those ``offload_grads`` places off the device,
    and at least the gradients of an offloaded optimizer, which the host steps with (ZeRO-Offload
    keeps them in host memory; the device holds only reduction buckets)."""
    _, gc, gn = _fractions(c, "grad")
    _, oc, on = _fractions(c, "opt")
    off = maximum(gc + gn, oc + on)
    return 1.0 - off, off - gn, gn


def train_memory(c, weights, grads, optimizer, activations, optimizer_params):
    """Split one device's training state (bytes) over the tiers, as :func:`inference_memory`.

    Device staging: two layers of streamed weights, gradients and activation checkpoints (double
    buffers). Host extras (``other``): the widening of the gradients an offloaded optimizer steps
    with to fp32 (DeepSpeed's CPU Adam reads fp32 gradients), and double buffers of optimizer
    state streamed from NVMe.
    """
    layers = maximum(c["stage_layers"], 1.0)
    shares = {"weights": _fractions(c, "w"), "gradients": _gradient_fractions(c), "optimizer": _fractions(c, "opt"),
              "activations": _fractions(c, "act")}
    amounts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations}
    gpu, host, nvme = {}, {}, {}
    staging = 0.0
    for kind, (g, h, n) in shares.items():
        amount = amounts[kind]
        gpu[kind], host[kind], nvme[kind] = amount * g, amount * h, amount * n
        if kind != "optimizer":
            staging = staging + 2.0 * amount / layers * (h + n)
    _, oc, on = _fractions(c, "opt")
    widening = maximum(4.0 - c["grad_bytes"], 0.0)
    host["other"] = optimizer_params * (oc + on) * widening + 2.0 * optimizer / layers * on
    return {"gpu": gpu, "staging": staging, "host": host, "nvme": nvme, "host_compute": (oc + on) > 0}
