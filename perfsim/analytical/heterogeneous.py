"""Heterogeneous systems: where each op of a pass runs (``place``) and how the devices overlap.

A system may hold several device groups: the main device (GPU, NPU or TPU) and PIM memory,
either *as* the device's memory (NeuPIMs: the NPU's HBM is HBM-PIM) or as stacks beside it on
a link (AttAcc: 5 HBM3-PIM stacks per GPU over NVLink). ``place`` moves op groups onto PIM:

* ``decode_attention``: ``QKᵀ`` and ``PV`` of decode passes over the KV cache, which then lives
  in PIM memory (NeuPIMs, AttAcc);
* ``prefill_attention``: the same for prefill passes (compute-bound: PIM is slower there, a
  what-if);
* ``mlp``: the MLP GEMMs of decode passes (GEMVs at small batch: Newton, AiM); the weights must be
  in PIM memory, so only where PIM is the device's memory.

Values are ``pim`` or the main device (``host``, or its kind: ``npu``, ``gpu``, ``tpu``). A PIM-only
device (kind ``pim``, PIM-GPT-like) runs every matmul of the model from its banks, whatever
``place`` says. Everything else (projections, norms, collectives, the LM head) stays on the main
device. A PIM attention sends the new token's query into the banks and reads the output back:
through the memory interface where PIM is the device's memory, with the softmax on the NPU's
vector engine (scores out, probabilities back in: the banks hold MAC units only), or over the
link where PIM stacks sit beside the host, with the softmax on the PIM device (as the AttAcc
simulator runs it), the new token's K and V going over the link too.

**Composition of a pass** (closed form; ``N``, ``P``, ``L``: busy seconds of the main device,
the PIM banks and the link over all layers; ``n``, ``p``: one layer's host and PIM-side parts):

* one batch (``sub_batches`` 1): every layer runs host, then PIM, then host: ``T = N + P + L``.
  Host and PIM wait for each other whether or not their memory accesses could overlap;
* two sub-batches (NeuPIMs' sub-batch interleaving): the host runs the GEMMs of one half while
  PIM runs the attention of the other. A two-job, two-machine flow shop of alternating stages
  finishes in ``T = max(N₂, P₂ + L₂, M₂) + min(n₂, p₂ + l₂)``: the busier side never idles and
  one stage of the other is exposed at the start or end of the step. ``N₂``, ``P₂``, ``L₂`` price
  the two halves (weights are read once per half); ``M₂ = D₂ + P₂`` only in ``blocked`` mode
  with PIM as the device's memory, where the host's memory traffic ``D₂`` and PIM commands take
  turns on the same banks (one row buffer); ``concurrent`` mode (dual row buffers) drops it.
  A batch of one sequence cannot split. Without ``sub_batches`` a concurrent system interleaves
  where that is the faster of the two (a scheduler's choice: halves of a small batch read every
  weight twice for little PIM work to hide), a blocked one does not;
* prefill with the KV cache headed for PIM stacks: the link carries each layer's K and V while
  the host computes the next, ``T = max(N, S) + min(n, s)``.

The same result reports each device's busy time and the bottleneck device.

All functions take the column dict ``c`` (:mod:`perfsim.plan.columns`) and arrays over configurations.
"""

from __future__ import annotations

import numpy as np

from perfsim.cost import npu
from perfsim.cost.pim import link_time, pim_time
from perfsim.cost.price import combine, price
from perfsim.graph.params import layer_counts
from perfsim.graph.transformer import (
    Attention,
    Gemm,
    Pass,
    head_ops,
    kv_bytes_per_device_token,
    kv_bytes_per_token,
    layer_ops,
)
from perfsim.plan.devices import KIND_NAMES
from perfsim.plan.rows import Detail, any_row, numeric, where_one
from perfsim.specs.units import GIB

#: device kinds, in the order of the ``main_kind`` column
#: GEMMs of the attention block (the projections); every other GEMM of a layer is its MLP
_ATTENTION_GEMMS = ("qkv_proj", "q_down", "q_up", "kv_down", "kv_up", "q_absorb", "v_absorb", "o_proj")
#: result keys a pass gains (zero where nothing is placed on PIM)
PIM_KEYS = ("pim_s", "pim_link_s", "overlap_s", "host_busy_s", "pim_flops", "pim_bytes", "pim_link_bytes",
            "sub_batches")


def placement_checks(c):
    """``(mask, reason, detail)`` of plans whose placement cannot run."""
    separate = c["pim_link_bw"] > 0
    return [
        ((c["place_pim"] > 0) & (c["has_pim"] == 0), "place puts work on PIM, but the hardware has no PIM memory",
         None),
        (c["place_wrong_kind"] > 0, "place names the main device by another kind than the hardware's", None),
        (((c["place_pim"] > 0) | (c["pim_device"] > 0)) & (c["train"] > 0),
         "PIM placement is modelled for inference; training runs on the main device", None),
        ((c["place_mlp"] > 0) & separate,
         "mlp on PIM needs its weights in PIM memory; this hardware's PIM stacks hold the KV cache only", None),
        ((c["place_prefill_attention"] > 0) & (c["place_decode_attention"] == 0) & separate,
         "prefill_attention on PIM stacks needs the KV cache there: place decode_attention on pim too", None),
    ]


def _masks(c, p: Pass):
    """Per-row placement of this pass: ``(attention, mlp, projections, ship)`` as 0/1 floats."""
    on = np.asarray(c["has_pim"]) > 0
    device = np.asarray(c["pim_device"]) > 0
    causal = np.asarray(p.causal) > 0
    attn_key = np.where(causal, c["place_prefill_attention"], c["place_decode_attention"]) > 0
    attn = (attn_key & on) | device
    mlp = ((np.asarray(c["place_mlp"]) > 0) & on & ~causal) | device
    # prefill of a KV cache that lives in PIM stacks: ship each layer's K and V over the link
    to_stacks = on & (np.asarray(c["pim_link_bw"]) > 0) & (np.asarray(c["place_decode_attention"]) > 0)
    ship = causal & to_stacks & ~attn
    return attn.astype(float), mlp.astype(float), device.astype(float), ship.astype(float)


def _host_io(c, moved_bytes, vector_ops, category, kernels=1.0):
    """Price dict of the main device's side of a PIM op: vectors through the memory interface
    and (NeuPIMs) the softmax on its vector engine."""
    dma = np.asarray(moved_bytes, dtype=float) / (c["hbm_bw"] * c["memory_max"])
    vec = npu.vector_time(vector_ops, c["vector_flops"])
    present = (np.asarray(moved_bytes) > 0) | (np.asarray(vector_ops) > 0)
    t = np.where(present, np.maximum(dma, vec) + kernels * c["launch_s"], 0.0)
    out = {category: t, "total_s": t, "launch_s": np.where(present, kernels * c["launch_s"], 0.0),
           "memory_bound_s": t, "dma_s": np.where(present, dma, 0.0), "vector_s": vec,
           "hbm_bytes": np.asarray(moved_bytes, dtype=float), "vector_ops": np.asarray(vector_ops, dtype=float)}
    return out


def _split(c, p: Pass, ops, attn, mlp, proj):
    """One group of ops (a layer, or the head) split by placement: the main device's price dict
    and the PIM side ``{pim_s, link_s, pim_flops, pim_bytes, link_bytes}``."""
    rates = dict(pim_flops=c["pim_flops"], pim_bw=c["pim_bw"], pim_eff=c["pim_eff"], launch_s=c["launch_s"])
    separate = (np.asarray(c["pim_link_bw"]) > 0).astype(float)
    host = price(c, ops)
    moved = []  # (mask, price of the ops moved off the main device)
    side = {"pim_s": 0.0, "link_s": 0.0, "pim_flops": 0.0, "pim_bytes": 0.0, "link_bytes": 0.0}
    extra = []  # (mask, price dict of main-device work a PIM op adds)
    act = c["act_bytes"]
    for op in ops:
        if isinstance(op, Attention):
            mask = attn
            # QK^T and PV in the banks over the KV cache; the softmax in the stack (AttAcc) or on
            # the NPU's vector engine, the scores crossing the memory interface both ways (NeuPIMs)
            softmax = npu.SOFTMAX_OPS * op.scores
            t = pim_time(op.flops, op.kv_bytes, **rates) + separate * npu.vector_time(softmax, c["pim_flops"])
            vectors = op.moved_bytes - op.kv_bytes  # query in, output out (and eager scores)
            extra.append((mask * (1.0 - separate),
                          _host_io(c, vectors + 2.0 * op.scores * act, softmax, "attention_s")))
            link = separate * (vectors + p.tokens * kv_bytes_per_token(c))
            flops, bank = op.flops, op.kv_bytes
        elif isinstance(op, Gemm):
            mask = proj if op.name in _ATTENTION_GEMMS or op.name == "lm_head" else mlp
            if not any_row(mask > 0):
                continue
            g = op.groups
            flops = 2.0 * op.m * op.n * op.k * g
            bank = op.k * op.n * g * c["w_bytes"]
            t = pim_time(flops, bank, **rates)
            # the vector in and the result out ride on the PIM command stream: no kernel of their own
            extra.append((mask, _host_io(c, (op.m * op.k + op.m * op.n) * g * act, 0.0, "gemm_s", kernels=0.0)))
            link = 0.0
        else:
            continue
        if not any_row(mask > 0):
            continue
        moved.append((mask, price(c, [op])))
        lt = link_time(link, c["pim_link_bw"])
        on = mask > 0  # rows without PIM may price it at infinity: select, do not multiply
        side["pim_s"] = side["pim_s"] + np.where(on, t, 0.0)
        side["link_s"] = side["link_s"] + np.where(on, lt, 0.0)
        side["pim_flops"] = side["pim_flops"] + np.where(on, flops, 0.0)
        side["pim_bytes"] = side["pim_bytes"] + np.where(on, bank, 0.0)
        side["link_bytes"] = side["link_bytes"] + np.where(on, link, 0.0)
    for mask, part in moved:
        host = {k: host[k] - np.where(mask > 0, part.get(k, 0.0), 0.0) for k in host}
    for mask, part in extra:
        host = {k: host[k] + np.where(mask > 0, part.get(k, 0.0), 0.0) for k in host}
    return host, side


def _pass_parts(c, p: Pass, masks, layers_scale):
    """Main-device price of a whole pass and the PIM side, layer by layer plus the head."""
    attn, mlp, proj, ship = masks
    dense, moe = layer_counts(c)
    terms = [(dense * layers_scale, False)]
    if any_row(moe > 0):
        terms.append((moe * layers_scale, True))
    hosts, side, layers = [], {}, 0.0
    for count, is_moe in terms:
        host, part = _split(c, p, layer_ops(c, p, moe=is_moe), attn, mlp, proj)
        hosts.append((count, host))
        for k, v in part.items():
            side[k] = side.get(k, 0.0) + count * v
        layers = layers + count
    host, part = _split(c, p, head_ops(c, p), attn, mlp, proj)
    hosts.append((1.0, host))
    for k, v in part.items():
        side[k] = side.get(k, 0.0) + v
    shipped = ship * layers * p.tokens * kv_bytes_per_token(c)
    side["ship_s"] = link_time(shipped, c["pim_link_bw"])
    side["link_bytes"] = side["link_bytes"] + shipped
    side["layers"] = np.maximum(layers, 1.0)
    side["layer_host_s"] = sum(w * h["total_s"] for w, h in hosts[:-1]) / side["layers"]
    return combine(*hosts), side


def place_pass(c, p: Pass, out, layers_scale=1.0):
    """Re-price a pass (``out``: :func:`~perfsim.analytical.inference.forward_time`'s summed price
    dict before hand-offs and overheads) where ``place`` or the device puts ops on PIM.

    Rows with nothing on PIM keep ``out`` unchanged; every row gains the keys of ``PIM_KEYS``
    (``pim_s``: PIM busy time, ``pim_link_s``: link busy time, ``overlap_s`` (≤ 0): time hidden by
    running the main device and PIM at once, so that ``gemm_s + attention_s + elementwise_s +
    communication_s + pim_s + pim_link_s + overlap_s = total_s``; ``host_busy_s``, ``pim_flops``,
    ``pim_bytes`` (read inside the banks), ``pim_link_bytes``, ``sub_batches`` used).
    """
    zero = 0.0 * out["total_s"]
    out = dict(out)
    out.update({k: zero for k in PIM_KEYS})
    out["host_busy_s"] = out["total_s"]
    out["sub_batches"] = zero + 1.0
    if not (any_row(numeric(c["has_pim"]) > 0) or any_row(numeric(c["pim_device"]) > 0)):
        return out  # no PIM on any row: nothing placed (every mask of _masks is 0)
    masks = _masks(c, p)
    if not any(any_row(m > 0) for m in masks):
        return out
    placed = (masks[0] + masks[1] + masks[2] + masks[3]) > 0
    host, side = _pass_parts(c, p, masks, layers_scale)
    pim_side = side["pim_s"] + side["link_s"]
    total = host["total_s"] + pim_side
    sub = (np.asarray(c["sub_batches"]) > 1) & (np.asarray(p.seqs) >= 2) & (pim_side > 0)
    if any_row(sub):
        half = Pass(tokens=p.tokens / 2.0, seqs=p.seqs / 2.0, q_len=p.q_len, kv_len=p.kv_len, causal=p.causal,
                    logits_tokens=p.logits_tokens / 2.0)
        h_host, h_side = _pass_parts(c, half, masks, layers_scale)
        host2 = {k: 2.0 * v for k, v in h_host.items()}
        side2 = {k: 2.0 * v for k, v in h_side.items() if k not in ("layers", "layer_host_s")}
        shared = (np.asarray(c["pim_blocked"]) > 0) & (np.asarray(c["pim_link_bw"]) == 0)
        busiest = np.maximum(host2["total_s"], side2["pim_s"] + side2["link_s"])
        busiest = np.maximum(busiest, np.where(shared, host2["dma_s"] + side2["pim_s"], 0.0))
        exposed = np.minimum(h_side["layer_host_s"], (h_side["pim_s"] + h_side["link_s"]) / h_side["layers"])
        interleaved = busiest + exposed
        sub = sub & ((np.asarray(c["sub_batches_auto"]) == 0) | (interleaved < total))
        total = np.where(sub, interleaved, total)
        host = {k: np.where(sub, host2[k], host[k]) for k in host}
        side = {k: np.where(sub, side2[k], side[k]) if k in side2 else side[k] for k in side}
    # prefill shipping its K and V to PIM stacks while the host computes the next layer
    ship = side["ship_s"]
    total = np.where(ship > 0, np.maximum(total, ship) + np.minimum(side["layer_host_s"], ship / side["layers"]),
                     total)
    new = dict(host)
    new.update({
        "total_s": total,
        "pim_s": side["pim_s"],
        "pim_link_s": side["link_s"] + ship,
        "host_busy_s": host["total_s"],
        "pim_flops": side["pim_flops"],
        "pim_bytes": side["pim_bytes"],
        "pim_link_bytes": side["link_bytes"],
        "sub_batches": np.where(sub, 2.0, 1.0),
    })
    new["overlap_s"] = total - host["total_s"] - new["pim_s"] - new["pim_link_s"]
    return {k: np.where(placed, new[k], out[k]) if k in new else out[k] for k in out}


def host_kv_share(c):
    """Share of the KV cache held in the main device's memory: 0 where decode attention runs in
    PIM stacks beside it (the cache lives there), else 1."""
    stacks = (c["has_pim"] > 0) & (c["pim_link_bw"] > 0) & (c["place_decode_attention"] > 0)
    return where_one(stacks, 0.0, 1.0)


def inference_results(c, out: dict, checks: list, pre: dict, dec: dict) -> None:
    """Add the heterogeneous keys of an inference run to ``out`` (in place) and its checks.

    NPU/TPU rows add each engine's busy time (``breakdown.{phase}.engines.{matrix_s, vector_s,
    dma_s}``); rows of a system with PIM add ``breakdown.{prefill,decode}.{pim_s, pim_link_s,
    overlap_s, sub_batches}``, the KV cache held in PIM stacks (``breakdown.pim.kv_cache_gib``,
    ``breakdown.pim.capacity_gib``; the main device's ``memory_per_device_gib`` then leaves it out,
    ``kv_cache_capacity_tokens`` and ``max_concurrency`` count the stacks) and the busy seconds of
    each device over the run (``breakdown.busy_s.{main,pim,pim_link}``). The keys appear where a
    row of the sweep has such a device, so GPU sweeps stay lean.
    """
    if any_row(numeric(c["systolic"]) > 0):
        for phase, parts in (("prefill", pre), ("decode", dec)):
            out[f"breakdown.{phase}.vector_ops"] = parts["vector_ops"] / c["pp"]
            for key in ("matrix_s", "vector_s", "dma_s"):
                out[f"breakdown.{phase}.engines.{key}"] = parts[key]
    if not any_row(numeric(c["has_pim"]) > 0):
        return
    seqs = np.ceil(c["batch"] / np.maximum(np.floor(c["dp"]), 1.0))
    prompt, gen = c["prompt_len"], c["gen_len"]
    steps = out["breakdown.decode.steps"]
    for phase, parts in (("prefill", pre), ("decode", dec)):
        for key in ("pim_s", "pim_link_s", "overlap_s", "sub_batches"):
            out[f"breakdown.{phase}.{key}"] = parts[key]
        for key in ("pim_bytes", "pim_link_bytes"):
            out[f"breakdown.{phase}.{key}"] = parts[key] / c["pp"]
    for name, key in (("main", "host_busy_s"), ("pim", "pim_s"), ("pim_link", "pim_link_s")):
        out[f"breakdown.busy_s.{name}"] = pre[key] + steps * dec[key]
    # KV cache in PIM stacks
    kv_token = kv_bytes_per_device_token(c)
    in_stacks = host_kv_share(c) == 0
    kv = seqs * (prompt + gen) * kv_token
    capacity = c["pim_capacity_bytes"]
    out["breakdown.pim.kv_cache_gib"] = np.where(in_stacks, kv, 0.0) / GIB
    out["breakdown.pim.capacity_gib"] = capacity / GIB
    tokens = np.floor(capacity / kv_token)
    out["kv_cache_capacity_tokens"] = np.where(in_stacks, tokens, out["kv_cache_capacity_tokens"])
    out["max_concurrency"] = np.where(in_stacks, np.floor(tokens / (prompt + gen)), out["max_concurrency"])
    # the decode step's lower bound reads in the banks what PIM reads there: the KV cache where
    # decode attention runs in PIM, everything on a PIM-only device
    bound = out["breakdown.decode.hbm_bound_s"]
    read = seqs * (prompt + gen / 2.0) * kv_token
    with np.errstate(divide="ignore", invalid="ignore"):
        bank_bw = c["pim_bw"] * c["pim_eff"]
        attention = bound - read / c["hbm_bw"] + read / bank_bw
        device = bound * c["hbm_bw"] / bank_bw
    attention_on = (c["has_pim"] > 0) & (c["place_decode_attention"] > 0)
    bound = np.where(attention_on, attention, bound)
    out["breakdown.decode.hbm_bound_s"] = np.where(c["pim_device"] > 0, device, bound)
    checks.append((in_stacks & (kv > capacity), "the KV cache does not fit in the PIM stacks",
                   Detail("the KV cache does not fit in the PIM stacks: {:.1f} GiB needed per device, {:.1f} GiB "
                          "of PIM", kv, capacity, per=GIB)))


def bottleneck_device(c, out: dict, n: int, shape: tuple | None = None):
    """Name of the busiest device of each row: the main device's kind, ``pim`` or ``pim_link``
    (training rows and rows without busy times: the main device). ``c`` may hold the columns of
    a box of ``shape``; ``out`` holds rows."""
    kind = np.broadcast_to(np.asarray(c["main_kind"], dtype=float), shape or (n,)).reshape(-1).astype(int)
    names = np.array(KIND_NAMES, dtype=object)[kind]
    if "breakdown.busy_s.pim" not in out:
        return names
    busy = [np.broadcast_to(np.asarray(out.get(f"breakdown.busy_s.{k}", np.nan), dtype=float), (n,))
            for k in ("main", "pim", "pim_link")]
    stack = np.nan_to_num(np.vstack(busy), nan=-1.0)
    pick = np.argmax(stack, axis=0)
    labels = np.where(pick == 1, "pim", np.where(pick == 2, "pim_link", names)).astype(object)
    return labels
