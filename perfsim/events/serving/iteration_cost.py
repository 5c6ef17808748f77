"""Cost of one serving iteration, tabulated once from the vectorised cost model.

The serving simulator never prices an operation itself. An iteration that runs ``T`` tokens
(``n_dec`` decodes with mean context ``k`` and ``n_pre`` prefill pieces) costs, by the
separability of :func:`perfsim.analytical.inference.forward_time`,

    step overhead + linear(T) + head(logits) + decode_attention(n_dec, k) + prefill_attention(n_pre, p)

where ``linear`` is everything that depends only on the token count (projections, MLPs, norms,
collectives, embedding, pipeline hand-offs), ``head`` the LM head over the sequences that sample a
token, and the two attention terms come from :func:`~perfsim.analytical.inference.attention_cost`.
Each term is evaluated once on a grid in one vectorised call (Vidur profiles the same
tables on hardware) and read back by linear interpolation: a scalar lookup inside the
simulation loop, and array lookups afterwards for the FLOPs and bytes the power model needs.

Under a power cap (``power_cap_w``) each iteration runs at its own clock: the tables also hold
the compute-bound and memory-bound parts of every term, and the iteration's clock is the one
:func:`perfsim.cost.power.span_clock` finds for its work, the compute-bound part
stretching by the clock (:func:`perfsim.cost.power.clocked_seconds`), as ``estimate``
prices a capped phase.

A batch of prefill pieces of different lengths is priced as ``n_pre`` causal prompts of the
length whose causal attention has the pieces' mean number of query-key pairs: exact for equal
prompts, and the FLOPs are kept for a mix (a chunk of ``q`` tokens after ``s`` cached ones has
``q (2 s + q + 1) / 2`` pairs). Decode attention is linear in the context, so the mean context of
the batch prices it.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from perfsim.analytical.inference import attention_cost, forward_time
from perfsim.cost.power import clocked_seconds, span_clock
from perfsim.cost.topology import group_collective
from perfsim.graph.transformer import Pass, kv_bytes_per_device_token

WORK = ("flops", "hbm_bytes", "link_bytes")
#: parts of an iteration the power-cap model reads: how it stretches with the clock, and its work
SPAN = ("compute_bound_s", "memory_bound_s", "memory_compute_s")
_CAPPED = (*SPAN, *WORK)
#: columns the power model reads, as Python numbers for the simulation loop
_POWER_COLUMNS = ("idle_w", "active_w", "matrix_w", "tdp_w", "peak_flops", "memory_j_per_byte", "link_j_per_byte",
                  "voltage_floor", "min_clock_ghz", "clock_ghz")
_INTEGER_UP_TO = 16384  # token counts tabulated one by one up to here (tile and wave quantisation steps)
_GROWTH = 1.005  # then a geometric grid


def _token_grid(top, integer_up_to=_INTEGER_UP_TO, growth=_GROWTH):
    top = max(math.ceil(top), 2)
    head = np.arange(0, min(top, integer_up_to) + 1, dtype=float)
    if top <= integer_up_to:
        return head
    steps = math.ceil(math.log(top / integer_up_to) / math.log(growth))
    tail = np.unique(np.ceil(integer_up_to * growth ** np.arange(1, steps + 1)))
    return np.concatenate([head, tail[tail > integer_up_to]])


def _context_grid(top, points=256):
    step = max(1.0, math.ceil(top / points))
    return np.arange(0.0, top + 2.0 * step, step)


def equivalent_prompt(pairs_mean):
    """Prompt length whose causal attention has ``pairs_mean`` query-key pairs: p (p + 1) / 2 = pairs."""
    return (math.sqrt(1.0 + 8.0 * pairs_mean) - 1.0) / 2.0


def chunk_pairs(q, cached):
    """Query-key pairs of a prefill piece of ``q`` tokens after ``cached`` tokens already in the cache."""
    return q * (2.0 * cached + q + 1.0) / 2.0


class _Axis:
    """A sorted grid with scalar and array lookups: ``(index, weight)`` of linear interpolation."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)
        self.list = self.values.tolist()
        self.last = len(self.list) - 2

    def locate(self, x):
        xs = self.list
        j = bisect_right(xs, x) - 1
        if j > self.last:
            j = self.last
        elif j < 0:
            j = 0
        return j, (x - xs[j]) / (xs[j + 1] - xs[j])

    def locate_many(self, x):
        x = np.asarray(x, dtype=float)
        j = np.clip(np.searchsorted(self.values, x, side="right") - 1, 0, self.last)
        return j, (x - self.values[j]) / (self.values[j + 1] - self.values[j])


class IterationCost:
    """Iteration times and work of one instance (``tp × pp`` devices) from the cost model.

    Parameters
    ----------
    c : dict
        Columns of a one-row plan (:func:`perfsim.plan.columns.build`).
    max_tokens : int
        Most tokens one iteration runs.
    max_seqs : int
        Most sequences in one iteration.
    max_context : int
        Longest context (prompt plus generated tokens) a sequence reaches.
    """

    def __init__(self, c, *, max_tokens, max_seqs, max_context):
        self.c = c
        self.overhead_s = float(c["step_overhead_s"])
        pp = float(np.asarray(c["pp"]))
        self.pp = pp

        # an empty part of a pass (no tokens, no grouped-GEMM experts touched) does no work: its 0/0
        # efficiencies are read as zero work
        with np.errstate(invalid="ignore", divide="ignore"):
            tokens = _token_grid(max(max_tokens, max_seqs))
            self.tokens = _Axis(tokens)
            p = Pass(tokens=tokens, seqs=1.0, q_len=tokens, kv_len=tokens, causal=1.0, logits_tokens=0.0)
            _, parts = forward_time(c, p)
            attn = attention_cost(c, p)
            self.linear = {"time_s": parts["total_s"] - attn["total_s"] - self.overhead_s}
            self.linear.update({k: np.broadcast_to(parts[k] - attn[k], tokens.shape) for k in _CAPPED})

            seqs = np.arange(0, max_seqs + 2, dtype=float)
            self.seqs = _Axis(seqs)
            zero = 0.0 * seqs
            p = Pass(tokens=zero, seqs=zero, q_len=zero, kv_len=zero, causal=zero, logits_tokens=seqs)
            _, parts = forward_time(c, p)
            attn = attention_cost(c, p)
            self.head = {"time_s": parts["total_s"] - attn["total_s"] - self.overhead_s}
            self.head.update({k: np.broadcast_to(parts[k] - attn[k], seqs.shape) for k in _CAPPED})

            context = _context_grid(max_context)
            self.context = _Axis(context)
            n, k = seqs[:, None], context[None, :]
            d = attention_cost(c, Pass(tokens=n, seqs=n, q_len=1.0, kv_len=k, causal=0.0, logits_tokens=n))
            self.decode = {key: np.broadcast_to(d["total_s" if key == "time_s" else key], (len(seqs), len(context)))
                           for key in ("time_s", *_CAPPED)}

            prompt = _token_grid(max_context, integer_up_to=64, growth=1.02)
            self.prompt = _Axis(prompt)
            pl = prompt[None, :]
            a = attention_cost(c, Pass(tokens=n * pl, seqs=n, q_len=pl, kv_len=pl, causal=1.0, logits_tokens=n))
            self.prefill = {key: np.broadcast_to(a["total_s" if key == "time_s" else key], (len(seqs), len(prompt)))
                            for key in ("time_s", *_CAPPED)}

        for table in (self.linear, self.head, self.decode, self.prefill):
            for key in table:
                table[key] = np.nan_to_num(np.asarray(table[key], dtype=float))
        # scalar tables for the simulation loop
        self._linear = self.linear["time_s"].tolist()
        self._head = self.head["time_s"].tolist()
        self._decode = self.decode["time_s"].tolist()
        self._prefill = self.prefill["time_s"].tolist()
        n_int = int(max_seqs) + 1
        self._base = [self.overhead_s + self._lin(i) + self._head[i] for i in range(n_int)]
        # a power cap: every iteration at its own clock
        cap = float(np.asarray(c.get("power_cap_w", np.nan)))
        self.cap = cap if math.isfinite(cap) else None
        if self.cap is not None:
            self.power_columns = {k: float(np.asarray(c[k])) for k in _POWER_COLUMNS}
            self._cap_tables = {key: (self.linear[key].tolist(), self.head[key].tolist(), self.decode[key].tolist(),
                                      self.prefill[key].tolist()) for key in _CAPPED}
            self.over_cap = 0  # iterations that cannot meet the cap even at the lowest clock

    # -- scalar lookups (simulation loop) -----------------------------------------------------
    def _lin(self, tokens):
        j, w = self.tokens.locate(tokens)
        v = self._linear
        return v[j] + w * (v[j + 1] - v[j])

    def _rows(self, table, axis, n, x):
        j, w = axis.locate(x)
        row = table[n]
        return row[j] + w * (row[j + 1] - row[j])

    def decode_step_s(self, n, context):
        """One decode iteration of ``n`` sequences attending ``context`` keys on average, s."""
        t = self._base[n] + self._rows(self._decode, self.context, n, context)
        return t if self.cap is None else self._capped(t, n, n, n, context, 0, 0.0)

    def prefill_step_s(self, tokens, n, prompt):
        """One prefill iteration: ``tokens`` in ``n`` prompts of equivalent length ``prompt``, s."""
        t = (self.overhead_s + self._lin(tokens) + self._head[n]
             + self._rows(self._prefill, self.prompt, n, prompt))
        return t if self.cap is None else self._capped(t, tokens, n, 0, 0.0, n, prompt)

    def mixed_step_s(self, tokens, logits, n_dec, context, n_pre, prompt):
        """An iteration of ``n_dec`` decodes and ``n_pre`` prefill pieces, ``tokens`` in all, s."""
        t = self.overhead_s + self._lin(tokens) + self._head[logits]
        if n_dec:
            t += self._rows(self._decode, self.context, n_dec, context)
        if n_pre:
            t += self._rows(self._prefill, self.prompt, n_pre, prompt)
        return t if self.cap is None else self._capped(t, tokens, logits, n_dec, context, n_pre, prompt)

    def _capped(self, full_s, tokens, logits, n_dec, context, n_pre, prompt):
        """Length of one iteration at the clock the power cap leaves it (scalar lookups)."""
        jt, wt = self.tokens.locate(tokens)
        jc, wc = self.context.locate(context) if n_dec else (0, 0.0)
        jp, wp = self.prompt.locate(prompt) if n_pre else (0, 0.0)
        sums = []
        for key in _CAPPED:
            lin, head, dec, pre = self._cap_tables[key]
            v = lin[jt] + wt * (lin[jt + 1] - lin[jt]) + head[logits]
            if n_dec:
                row = dec[n_dec]
                v += row[jc] + wc * (row[jc + 1] - row[jc])
            if n_pre:
                row = pre[n_pre]
                v += row[jp] + wp * (row[jp + 1] - row[jp])
            sums.append(v)
        compute, memory, memory_compute, flops, hbm, link = sums
        span = _span(full_s, compute, memory, memory_compute)
        clock, fits = span_clock(self.power_columns, self.cap, span, flops / self.pp, hbm / self.pp, link / self.pp)
        if not fits:
            self.over_cap += 1
        return full_s if clock == 1.0 else clocked_seconds(clock, *span)

    # -- array lookups (after the run) --------------------------------------------------------
    @staticmethod
    def _interp(table, axis, x):
        j, w = axis.locate_many(x)
        return table[j] + w * (table[j + 1] - table[j])

    @staticmethod
    def _interp_rows(table, axis, n, x):
        j, w = axis.locate_many(x)
        n = np.asarray(n, dtype=np.int64)
        return table[n, j] + w * (table[n, j + 1] - table[n, j])

    def work(self, tokens, logits, n_dec, context, n_pre, prompt):
        """Time and work of many iterations (arrays): ``{time_s, flops, hbm_bytes, link_bytes}``.

        FLOPs and bytes are those of one device (the chain of ``pp`` stages shares them). Under a
        power cap ``time_s`` is the capped length, and ``full_s`` (at the top clock) and
        ``clock_ratio`` come too.
        """
        n_dec = np.asarray(n_dec, dtype=np.int64)
        n_pre = np.asarray(n_pre, dtype=np.int64)
        logits = np.asarray(logits, dtype=np.int64)
        out = {}
        for key in ("time_s", *(WORK if self.cap is None else _CAPPED)):
            v = self._interp(self.linear[key], self.tokens, tokens) + self.head[key][logits]
            v = v + np.where(n_dec > 0, self._interp_rows(self.decode[key], self.context, n_dec, context), 0.0)
            v = v + np.where(n_pre > 0, self._interp_rows(self.prefill[key], self.prompt, n_pre, prompt), 0.0)
            out[key] = v / self.pp if key in WORK else v
        out["time_s"] = out["time_s"] + self.overhead_s
        if self.cap is not None:
            span = _span(out["time_s"], *(out.pop(key) for key in SPAN))
            clock, _ = span_clock(self.power_columns, self.cap, span, out["flops"], out["hbm_bytes"],
                                  out["link_bytes"])
            out["full_s"] = out["time_s"]
            out["clock_ratio"] = clock
            out["time_s"] = np.where(clock < 1.0, clocked_seconds(clock, *span), out["time_s"])
        return out

    def decode_steps_s(self, n, contexts):
        """Decode iterations of ``n`` sequences at each of ``contexts`` (array), s."""
        if self.cap is not None:
            many = np.full(len(contexts), n)
            return self.work(many, many, many, contexts, 0 * many, 0.0 * contexts)["time_s"]
        return self._base[n] + self._interp_rows(self.decode["time_s"], self.context, np.full(len(contexts), n),
                                                 contexts)


def _span(full_s, compute, memory, memory_compute):
    """An iteration's parts, each within what contains it (interpolation may overshoot by rounding)."""
    if isinstance(full_s, np.ndarray):
        compute = np.clip(compute, 0.0, full_s)
        memory = np.clip(memory, 0.0, full_s - compute)
        return full_s, compute, memory, np.clip(memory_compute, 0.0, memory)
    compute = min(max(compute, 0.0), full_s)
    memory = min(max(memory, 0.0), full_s - compute)
    return full_s, compute, memory, min(max(memory_compute, 0.0), memory)


def kv_transfer_s(c, tokens, *, same_node):
    """Seconds to ship the KV cache of ``tokens`` tokens from a prefill to a decode instance.

    Each device of the prefill instance sends its shard (its KV heads, its pipeline stage's layers)
    to its peer in the decode instance: a point-to-point transfer on the scale-up fabric when both
    sit in one node, else on the scale-out network (:func:`perfsim.cost.price.group_collective`).
    """
    size = np.asarray(tokens, dtype=float) * kv_bytes_per_device_token(c)
    stride = 1.0 if same_node else float(np.asarray(c["devices_per_node"]))
    return group_collective(c, "send_recv", size, 2.0, stride=stride)


def kv_transfer_bytes(c, tokens):
    """Bytes one device sends to ship the KV cache of ``tokens`` tokens."""
    return np.asarray(tokens, dtype=float) * kv_bytes_per_device_token(c)
