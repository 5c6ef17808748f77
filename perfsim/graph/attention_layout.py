"""How a layer's attention and KV cache are laid out over the tensor-parallel ranks.

By heads (``attention_sharding: heads``, Megatron-LM): each rank attends with ``heads / tp`` query heads
and holds ``kv_heads / tp`` key/value heads of every sequence, at least one, so a model with fewer KV
heads than ranks (multi-query or grouped-query attention) holds a copy of its KV cache on every
rank that shares a head.

By batch (``attention_sharding: batch``): decode attention runs on each rank over its own share of the
sequences with every head, against a KV cache that holds each sequence on one rank only. Pope et al.,
"Efficiently Scaling Transformer Inference" (MLSys 2023, arXiv 2211.05102), Sec. 3.3 and Figure 5b:
the projections stay sharded by heads, an all-to-all moves the new token's queries to the rank that
holds the sequence and another moves the attention output back; the KV cache a rank holds and reads
is ``1 / tp`` of the whole (``tp`` times less than by heads for multi-query attention), for two small
all-to-alls per layer. Prefill attends by heads (the paper's Sec. 3.3: there the queries of many
tokens amortise the cache reads), and writes each sequence's keys and values on its own rank.

Hugging Face configs do not state this: it is a plan choice, ``heads`` by default.
"""

from __future__ import annotations

import numpy as np

from perfsim.plan.rows import any_row, maximum, numeric, where_one


def kv_heads_per_device(c):
    """KV heads each tensor-parallel rank holds of a sequence it attends by heads (replicated when tp
    exceeds them)."""
    return maximum(c["kv_heads"] / c["tp"], 1.0)


def _token_bytes(c, kv_heads):
    """KV-cache bytes of one token of one layer over ``kv_heads`` key/value heads (MLA: its latent)."""
    standard = 2.0 * kv_heads * c["head_dim"]
    latent = c["kv_lora"] + c["qk_rope"]
    return where_one(c["kv_lora"] > 0, latent, standard) * c["kv_bytes"]


def by_batch(c):
    """1 where the plan shards decode attention and the KV cache over sequences (``attention_sharding``
    batch), else 0 (hand-made column sets without the column: by heads)."""
    return c.get("attn_batch", 0.0)


def kv_bytes_per_token(c):
    """KV-cache bytes per token per layer per device: by heads, every KV head the rank holds (MLA
    caches its latent, replicated over TP); by batch, each token's heads on one rank of ``tp``,
    ``1 / tp`` of them per token over an evenly spread batch."""
    heads = _token_bytes(c, kv_heads_per_device(c))
    batch = by_batch(c)
    if not any_row(numeric(batch) > 0):  # (by heads on every row)
        return heads
    return where_one(batch > 0, _token_bytes(c, c["kv_heads"]) / c["tp"], heads)


def attention_core(c, p, heads_dev, kv_dev):
    """``(batched, seqs, heads, kv_heads, token_bytes)`` of the attention core on the busiest rank
    of pass ``p``: 1 where it runs by batch (a decode pass of a batch-sharded plan), the sequences it
    attends (``⌈seqs / tp⌉`` by batch: the fullest rank), their query and KV heads, and the KV bytes
    per token and layer it reads for each of them. ``heads_dev``, ``kv_dev``: the heads layout's."""
    batch = by_batch(c)
    heads_bytes = _token_bytes(c, kv_dev)
    if not any_row(numeric(batch) > 0):  # (by heads on every row: no all-to-all either)
        return 0.0, p.seqs, heads_dev, kv_dev, heads_bytes
    batched = (batch > 0) & (p.causal <= 0)
    seqs = where_one(batched, np.ceil(p.seqs / c["tp"] - 1e-9), p.seqs)
    return (where_one(batched, 1.0, 0.0), seqs, where_one(batched, c["heads"], heads_dev),
            where_one(batched, c["kv_heads"], kv_dev), where_one(batched, _token_bytes(c, c["kv_heads"]), heads_bytes))
