"""Cost of one serving iteration, tabulated once from the vectorised cost model.

The serving simulator never prices an operation itself. An iteration that runs ``T`` tokens (``n_dec`` decodes with mean
context ``k`` and ``n_pre`` prefill pieces) costs, by the separability of
:func:`perfsim.analytical.inference.forward_time`,

    host(n_dec + n_pre) + linear(T) + head(logits) + decode_attention(n_dec, k) + prefill_attention(n_pre, p)

less what of it the kernels hide (:mod:`perfsim.cost.host`), ``host`` being the engine's host time (``step_overhead_s``
plus ``host_per_seq_s`` per sequence served); ``linear`` is everything that depends only on the token count
(projections, MLPs, norms, collectives, embedding, pipeline hand-offs), ``head`` the LM head over the sequences that
sample a token, and the two attention terms come from :func:`~perfsim.analytical.inference.attention_cost`. Each term is
evaluated once on a grid in one vectorised call (Vidur profiles the same tables on hardware) and read back by linear
interpolation, one code for both uses: at Python numbers on lists inside the simulation loop (one iteration at a time,
where a NumPy call would cost more than the lookup), and at arrays afterwards for the FLOPs and bytes the power model
needs.

Under the device's power limit (``power_cap_w`` where a plan sets one, else the board's ``tdp_w``:
:func:`perfsim.cost.power.board_cap`) each iteration runs at its own clock: the tables also hold the compute-bound and
memory-bound parts of every term, and the iteration's clock is the one :func:`perfsim.cost.power.span_under_cap` finds
for its work, the compute-bound part stretching by the clock (:func:`perfsim.cost.power.clocked_seconds`), as
``estimate`` prices a capped phase.

A batch of prefill pieces of different lengths is priced as ``n_pre`` causal prompts of the length whose causal
attention has the pieces' mean number of query-key pairs: exact for equal prompts, and the FLOPs are kept for a mix (a
chunk of ``q`` tokens after ``s`` cached ones has ``q (2 s + q + 1) / 2`` pairs). Decode attention is linear in the
context, so the mean context of the batch prices it.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.analytical.inference import attention_cost, forward_time
from perfsim.cost.host import hidden_decode_base, hidden_host
from perfsim.cost.power import CAP_TOLERANCE, board_cap, not_clock_limited, span_under_cap, top_clock_power_w
from perfsim.cost.price import price
from perfsim.cost.topology import group_collective
from perfsim.events.serving.axes import Axis, context_grid, token_grid
from perfsim.graph.params import layer_counts
from perfsim.graph.transformer import Pass, kv_bytes_per_device_token, moe_mlp_ops

WORK = ("flops", "hbm_bytes", "link_bytes")
#: parts of an iteration the power-cap model reads: how it stretches with the clock, and its work
SPAN = ("compute_bound_s", "memory_bound_s", "memory_compute_s")
_CAPPED = (*SPAN, *WORK)
_TABLED = (*_CAPPED, "launch_s")  # and the kernels' launch gaps (the device waits: the host-gap power)
#: columns the power model reads, as Python numbers for the simulation loop
_POWER_COLUMNS = ("idle_w", "active_w", "matrix_w", "tdp_w", "peak_flops", "memory_j_per_byte", "link_j_per_byte",
                  "voltage_floor", "min_clock_ghz", "clock_ghz", "main_kind", "host_gap_w")
_BLOCK_ROWS = 16384  # iterations whose work is read from the tables at once (their temporaries fit a cache)


def equivalent_prompt(pairs_mean):
    """Prompt length whose causal attention has ``pairs_mean`` query-key pairs: p (p + 1) / 2 = pairs."""
    return (math.sqrt(1.0 + 8.0 * pairs_mean) - 1.0) / 2.0


def chunk_pairs(q, cached):
    """Query-key pairs of a prefill piece of ``q`` tokens after ``cached`` tokens already in the cache."""
    return q * (2.0 * cached + q + 1.0) / 2.0


def _lerp(values, j, w):
    """``values`` interpolated at ``(j, w)`` of :meth:`Axis.locate`: a list at a number, an array at arrays."""
    return values[j] + w * (values[j + 1] - values[j])


def _sum(tables, at):
    """One quantity of an iteration (or of many) from its tables at ``at`` (:meth:`IterationCost._at`):
    the token-count terms, the LM head, decode and prefill attention."""
    linear, head, decode, prefill = tables
    jt, wt, logits, jc, wc, jp, wp = at
    return _lerp(linear, jt, wt) + head[logits] + _lerp(decode, jc, wc) + _lerp(prefill, jp, wp)


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
        # host time per sequence the iteration serves, and the share of all host time under the kernels
        self.per_seq_s, self.overlap = float(c["host_per_seq_s"]), float(np.asarray(c.get("host_overlap", 0.0)))
        pp = float(np.asarray(c["pp"]))
        self.pp = pp

        # an empty part of a pass (no tokens, no grouped-GEMM experts touched) does no work: its 0/0
        # efficiencies are read as zero work
        with np.errstate(invalid="ignore", divide="ignore"):
            tokens = token_grid(max(max_tokens, max_seqs))
            self.tokens = Axis(tokens)
            p = Pass(tokens=tokens, seqs=1.0, q_len=tokens, kv_len=tokens, causal=1.0, logits_tokens=0.0)
            _, parts = forward_time(c, p)
            attn = attention_cost(c, p)
            linear = {"time_s": parts["total_s"] - attn["total_s"] - parts["overhead_s"]}
            linear.update({k: np.broadcast_to(parts[k] - attn[k], tokens.shape) for k in _TABLED})

            # the MoE MLPs alone (router, experts, dispatch and combine), every MoE layer: the part of
            # an iteration a lock-stepped expert group shares (:meth:`group_step_s`)
            _, moe_layers = layer_counts(c)
            moe = np.broadcast_to(np.nan_to_num(np.asarray(price(c, moe_mlp_ops(c, p))["total_s"]) * moe_layers),
                                  tokens.shape) if np.any(np.asarray(moe_layers) > 0) else 0.0 * tokens
            self._moe = moe.tolist()

            seqs = np.arange(0, max_seqs + 2, dtype=float)
            zero = 0.0 * seqs
            p = Pass(tokens=zero, seqs=zero, q_len=zero, kv_len=zero, causal=zero, logits_tokens=seqs)
            _, parts = forward_time(c, p)
            attn = attention_cost(c, p)
            head = {"time_s": parts["total_s"] - attn["total_s"] - parts["overhead_s"]}
            head.update({k: np.broadcast_to(parts[k] - attn[k], seqs.shape) for k in _TABLED})

            context = context_grid(max_context)
            self.context = Axis(context)
            self._no_context = self.context.locate(0.0)  # where an iteration without decodes reads them
            n, k = seqs[:, None], context[None, :]
            d = attention_cost(c, Pass(tokens=n, seqs=n, q_len=1.0, kv_len=k, causal=0.0, logits_tokens=n))
            decode = {key: np.broadcast_to(d["total_s" if key == "time_s" else key], (len(seqs), len(context)))
                      for key in ("time_s", *_TABLED)}

            prompt = token_grid(max_context, integer_up_to=64, growth=1.02)
            self.prompt = Axis(prompt)
            self._no_prompt = self.prompt.locate(0.0)  # where an iteration without prefill pieces reads them
            pl = prompt[None, :]
            a = attention_cost(c, Pass(tokens=n * pl, seqs=n, q_len=pl, kv_len=pl, causal=1.0, logits_tokens=n))
            prefill = {key: np.broadcast_to(a["total_s" if key == "time_s" else key], (len(seqs), len(prompt)))
                       for key in ("time_s", *_TABLED)}

        # per quantity: (linear, head, decode, prefill), the attention tables flat (row n: n sequences;
        # row 0, no sequence, no attention), as arrays and as lists for the simulation loop (the time's;
        # the others' when first read: :meth:`_listed`)
        self._arrays = {}
        for key in ("time_s", *_TABLED):
            tables = [np.nan_to_num(np.asarray(t[key], dtype=float)) for t in (linear, head, decode, prefill)]
            for table in tables[2:]:
                table[0] = 0.0
            self._arrays[key] = tuple(t.reshape(-1) for t in tables)
        self._lists = {"time_s": tuple(t.tolist() for t in self._arrays["time_s"])}
        self._time = self._lists["time_s"]
        self._columns = {}  # (:meth:`_stacked`)
        self._pair_arrays = None  # (:meth:`_within_cap`)
        self._prefills: dict = {}  # (tokens, prompts, prompt length) -> (prefill_step_s, iterations over the cap)
        self.over_cap = 0  # iterations that cannot meet the cap even at the lowest clock
        self._decode_time = self._time[2]
        self._lookup = self._clear = None  # (:meth:`decode_lookup`, :meth:`_decode_clear`)
        n_int = int(max_seqs) + 1
        lin, head_s = self._lists["time_s"][:2]
        self._base = [self.overhead_s + self.per_seq_s * i + _lerp(lin, *self.tokens.locate(i)) + head_s[i]
                      for i in range(n_int)]
        # the power limit (a plan's cap, else the board's TDP): every iteration at its own clock
        cap = float(np.asarray(board_cap(c))) if "tdp_w" in c else math.inf
        self.cap = cap if math.isfinite(cap) else None
        self._decode_free = self.cap is None  # decode iterations that need no clock solve (set below under a cap)
        if self.cap is not None:
            self.power_columns = {k: float(np.asarray(c[k])) for k in _POWER_COLUMNS}
            self._unclipped = not not_clock_limited(self.power_columns)  # the DVFS solve sees the unclipped power
            # decode iterations read the token terms up to max_seqs, the LM head and the decode
            # attention only: where none of those entries reaches the limit at the top clock, neither
            # does any decode iteration, and its clock needs no solve
            last = min(self.tokens.locate(float(max_seqs))[0] + 1, self.tokens.size - 1)
            self._decode_free = self._unclipped and self._peak_w(((0, last + 1), (1, None), (2, None))) \
                <= self.cap * (1.0 + CAP_TOLERANCE)
            # other iterations: the larger power of each interpolated entry and its neighbour (read
            # together), the LM head's entries alone, for :meth:`_below_cap`
            self._pair_w = tuple((np.maximum(w, np.append(w[1:], 0.0)) if table != 1 else w).tolist()
                                 for table, w in ((table, self._entry_w(table)) for table in range(4)))

    def _peak_w(self, parts):
        """A bound on the power at the top clock of an iteration made of the given table entries (``(table, stop)``: 0
        token terms, 1 LM head, 2 decode and 3 prefill attention; ``stop`` the entries read): each entry's work over its
        time at most (the mediant inequality: a sum of entries, interpolated or not, plus host time that adds time and
        no work, never draws more than its hungriest entry)."""
        peak = 0.0
        for table, stop in parts:
            peak = max(peak, float(np.max(self._entry_w(table)[:stop], initial=0.0)))
        return peak

    def _entry_w(self, table):
        """Power at the top clock of each entry of a table alone (its work over its time; inf where
        work takes no time), W."""
        f, h, n = (self._arrays[key][table] / self.pp for key in WORK)
        t = self._arrays["time_s"][table]
        return np.where(t > 0, top_clock_power_w(self.power_columns, t, f, h, n), np.where(f + h + n > 0, np.inf, 0.0))

    def _below_cap(self, at):
        """Whether an iteration reading the tables at ``at`` (:meth:`_at`) surely stays within the cap at
        the top clock: every entry it reads, interpolated between neighbours, draws at most the cap
        alone (the bound of :meth:`_peak_w` over the entries read, without its rounding margin)."""
        jt, wt, logits, jc, wc, jp, wp = at
        lin, head, decode, prefill = self._pair_w
        return (0.0 <= wt <= 1.0 and 0.0 <= wc <= 1.0 and 0.0 <= wp <= 1.0
                and max(lin[jt], head[logits], decode[jc], prefill[jp]) <= self.cap)

    def _at(self, tokens, logits, n_dec, context, n_pre, prompt):
        """Where an iteration (numbers) or many (arrays) read the tables (:func:`_sum`)."""
        jt, wt = self.tokens.locate(tokens)
        jc, wc = self.context.locate(context)
        jp, wp = self.prompt.locate(prompt)
        return jt, wt, logits, n_dec * self.context.size + jc, wc, n_pre * self.prompt.size + jp, wp

    # -- the simulation loop: one iteration at a time -----------------------------------------
    def decode_step_s(self, n, context):
        """One decode iteration of ``n`` sequences attending ``context`` keys on average, s."""
        axis = self.context
        j, w = axis.locate(context)
        j += n * axis.size
        t = self._base[n] + _lerp(self._decode_time, j, w)
        t -= (hidden := hidden_host(t, self.overhead_s + self.per_seq_s * n, self.overlap))
        if self._decode_free or (self._clear or self._decode_clear())[j] and 0.0 <= w <= 1.0 and t:
            return t  # (no clock solve: :meth:`_capped_at`'s first check, per entry in :meth:`_decode_clear`)
        # (where it reads the tables: :meth:`_at` for ``n`` tokens, logits and decodes, no prefill)
        return self._capped_at(t, (*self.tokens.locate(n), n, j, w, *self._no_prompt), n, hidden)

    def _decode_clear(self):
        """Per entry of the decode table (row ``n`` from ``n`` times the context axis's size), whether a decode
        iteration of ``n`` sequences read there (weight 0 to 1, length not 0) surely needs no clock solve: the bound
        of :meth:`_below_cap` for ``n`` tokens and logits, no prefill (made once, a list)."""
        if self._clear is None:
            lin, head, decode, prefill = (np.asarray(w) for w in self._pair_w)
            jt, wt = self.tokens.locate(np.arange(len(head), dtype=float))
            (jp, wp), row = self._no_prompt, np.maximum(lin[jt], head)
            row = np.where((0.0 <= wt) & (wt <= 1.0) & (0.0 <= wp <= 1.0) & self._unclipped,
                           np.maximum(row, prefill[jp]), np.inf)[:, None]
            self._clear = (np.maximum(decode.reshape(len(head), -1), row) <= self.cap).ravel().tolist()
        return self._clear

    def decode_lookup(self):
        """What :meth:`decode_step_s` reads: ``(base, table, slope, width, clear)``, the host (less what the kernels
        hide), token and LM-head time by batch size and the decode attention table, row ``n`` from ``n * width``, read
        at :attr:`context` (``slope``: each entry's difference to the next, taken once); ``clear``, where the power cap
        may slow a decode iteration (else None), whether one read at an entry (weight 0 to 1, length not 0) surely needs
        no clock solve (:meth:`_below_cap`'s bound: its length is the table's). All None where one hides only part of
        its host time, or some of it under a cap (each is then priced on its own)."""
        if self._lookup is None:  # (made once: the loop asks each time it starts)
            base = hidden_decode_base(self._base, self._decode_time, self.context.size, self.host_s, self.overlap)
            if base is None or (self.overlap and not self._decode_free):
                self._lookup = None, None, None, None, None
                return self._lookup
            clear = None if self._decode_free else self._decode_clear()
            slope = np.diff(self._arrays["time_s"][2]).tolist()
            self._lookup = base, self._decode_time, slope, self.context.size, clear
        return self._lookup

    def mixed_lookup(self):
        """What :meth:`mixed_step_s` reads, for a loop that prices its iterations itself: ``(tables, host, axes, none,
        cap)``, the time tables (token terms, LM head, decode and prefill attention), the host time ``(overhead_s,
        per_seq_s, overlap)``, the token, context and prompt axes, where an iteration without decodes (prefill pieces)
        reads their tables; ``cap`` None without a power limit, else ``(bound, limit, capped)``: the entries' powers
        :meth:`_below_cap` reads (None where the clock solve sees clipped power: no bound), the limit, and
        :meth:`_capped_at`, which prices an iteration the bound does not clear."""
        cap = None if self.cap is None else (self._pair_w if self._unclipped else None, self.cap, self._capped_at)
        return self._time, (self.overhead_s, self.per_seq_s, self.overlap), (self.tokens, self.context, self.prompt), \
            (self._no_context, self._no_prompt), cap

    def prefill_step_s(self, tokens, n, prompt):
        """One prefill iteration: ``tokens`` in ``n`` prompts of equivalent length ``prompt``, s.

        Kept per ``(tokens, n, prompt)`` once found (prompt lengths recur), with whether it could not
        meet the power cap (:attr:`over_cap` counts every such iteration)."""
        key = (tokens, n, prompt)
        known = self._prefills.get(key)
        if known is None:
            over = self.over_cap
            dur = self._prefill_step_s(tokens, n, prompt)
            self._prefills[key] = known = (dur, self.over_cap - over)
            self.over_cap = over
        self.over_cap += known[1]
        return known[0]

    def price_pairs(self, tokens, n, pairs):
        """A prefill iteration of ``tokens`` tokens in ``n`` prompts with ``pairs`` query-key pairs in all:
        ``(prompt, seconds, over)``, the equivalent prompt length, :meth:`prefill_step_s` there, and
        the iterations over the cap that its caller counts (in :attr:`over_cap`) each time it uses them."""
        over = self.over_cap
        prompt = equivalent_prompt(pairs / n)
        known = (prompt, self._prefill_step_s(tokens, n, prompt), self.over_cap - over)
        self.over_cap = over
        return known

    def _prefill_step_s(self, tokens, n, prompt):
        linear, head, _, prefill = self._time
        jt, wt = self.tokens.locate(tokens)
        jp, wp = self.prompt.locate(prompt)
        jp = n * self.prompt.size + jp
        t = self.overhead_s + self.per_seq_s * n + _lerp(linear, jt, wt) + head[n] + _lerp(prefill, jp, wp)
        t -= (hidden := hidden_host(t, self.overhead_s + self.per_seq_s * n, self.overlap))
        if self.cap is None:
            return t
        # (where it reads the tables: :meth:`_at` for no decode, its axes located once; the first
        # check of :meth:`_capped_at`, :meth:`_below_cap`, here)
        jc, wc = self._no_context
        if self._unclipped and t and 0.0 <= wt <= 1.0 and 0.0 <= wc <= 1.0 and 0.0 <= wp <= 1.0:
            lin_w, head_w, decode_w, prefill_w = self._pair_w
            if max(lin_w[jt], head_w[n], decode_w[jc], prefill_w[jp]) <= self.cap:
                return t
        return self._capped_at(t, (jt, wt, n, jc, wc, jp, wp), n, hidden)

    def mixed_step_s(self, tokens, logits, n_dec, context, n_pre, prompt):
        """An iteration of ``n_dec`` decodes and ``n_pre`` prefill pieces, ``tokens`` in all, s (``context``
        is 0 without decodes, ``prompt`` 0 without prefill pieces: those axes are then not searched)."""
        linear, head, decode, prefill = self._lists["time_s"]
        jt, wt = self.tokens.locate(tokens)
        t = self.overhead_s + self.per_seq_s * (n_dec + n_pre) + _lerp(linear, jt, wt) + head[logits]
        if n_dec:
            jc, wc = self.context.locate(context)
            jc += n_dec * self.context.size
            t += _lerp(decode, jc, wc)
        else:
            jc, wc = self._no_context
        if n_pre:
            jp, wp = self.prompt.locate(prompt)
            jp += n_pre * self.prompt.size
            t += _lerp(prefill, jp, wp)
        else:
            jp, wp = self._no_prompt
        t -= (hidden := hidden_host(t, self.overhead_s + self.per_seq_s * (n_dec + n_pre), self.overlap))
        return t if self.cap is None else self._capped_at(t, (jt, wt, logits, jc, wc, jp, wp), n_dec + n_pre, hidden)

    def moe_s(self, tokens):
        """The MoE MLPs of an iteration of ``tokens`` tokens on each rank of its expert group, s."""
        return _lerp(self._moe, *self.tokens.locate(tokens))

    def group_step_s(self, steps, tokens, ranks):
        """One iteration of a lock-stepped expert group (attention data parallel + expert parallel).

        ``steps`` and ``tokens`` are the lengths and token counts of the iterations its busy ranks run alone (each
        priced as if every rank ran as many tokens); ``ranks`` the group's size (idle ranks count with no tokens). Every
        MoE layer waits for every rank, so the group's iteration is the slowest rank's work outside the MoE layers plus
        the MoE layers at the group's mean token count (its total over the ranks: the experts' work is spread over
        them), s. Under a power cap the ranks' lengths are their capped ones and the MoE parts are taken at the top
        clock."""
        shared = self.moe_s(sum(tokens) / ranks)
        return max(step - self.moe_s(t) for step, t in zip(steps, tokens, strict=True)) + shared

    def _capped_at(self, full_s, at, seqs, hidden=0.0):
        """Length of one iteration (``full_s`` at the top clock) at the clock the power cap leaves it; it reads the
        tables at ``at`` (:meth:`_at`) and serves ``seqs`` sequences (host time, ``hidden`` of it under the kernels)."""
        if self._unclipped and full_s and self._below_cap(at):  # (what the check below would find)
            return full_s
        flops, hbm, link = (_sum(self._listed(key), at) for key in WORK)
        flops, hbm, link = flops / self.pp, hbm / self.pp, link / self.pp
        # the power at the top clock: within the cap, no change
        if self._unclipped and full_s:
            if not top_clock_power_w(self.power_columns, full_s, flops, hbm, link) > self.cap * (1.0 + CAP_TOLERANCE):
                return full_s
        compute, memory, memory_compute, launch = (_sum(self._listed(key), at) for key in (*SPAN, "launch_s"))
        _, seconds, fits = span_under_cap(self.power_columns, self.cap, full_s, compute, memory, memory_compute,
                                          flops, hbm, link, 0.0, self.host_s(seqs, launch) - hidden)
        if not fits:
            self.over_cap += 1
        return seconds

    def host_s(self, seqs, launch_s):
        """Time of an iteration of ``seqs`` sequences a device waits with no kernel running, s: the host
        time and its stage's share of the chain's kernel launch gaps ``launch_s``."""
        return self.overhead_s + self.per_seq_s * seqs + launch_s / self.pp

    def _listed(self, key):
        """The tables of quantity ``key`` as lists (one iteration reads them), made when first read."""
        tables = self._lists.get(key)
        if tables is None:
            tables = self._lists[key] = tuple(t.tolist() for t in self._arrays[key])
        return tables

    # -- many iterations at once --------------------------------------------------------------
    def work(self, tokens, logits, n_dec, context, n_pre, prompt, *, time=True):
        """Time and work of many iterations (arrays): ``{time_s, flops, hbm_bytes, link_bytes}``.

        FLOPs and bytes are those of one device (the chain of ``pp`` stages shares them). Under a power cap ``time_s``
        is the capped length, and ``full_s`` (at the top clock) and ``clock_ratio`` come too; without one,
        ``time=False`` leaves ``time_s`` out. ``gap_s``: the time a device waits with no kernel running (host time the
        kernels do not hide, ``hidden_s``, and its stage's share of the launch gaps: :meth:`host_s`).

        The attention tables are read only where an iteration has decodes (prefill pieces): their row of none is zero,
        so elsewhere they add exactly nothing (:func:`_sum`'s order kept).

        Under a cap that every iteration surely stays within at the top clock (:meth:`_within_cap`: the bound the
        simulation loop clears them by) the clock solve would keep each at the top clock: its parts are not read and
        it is not run (``clock_ratio`` 1, ``time_s`` the full length)."""
        rows = np.broadcast_arrays(  # (columns in one piece: the records' strided ones are read and gathered often)
            np.ascontiguousarray(tokens, dtype=float), np.asarray(logits, dtype=np.int64),
            np.asarray(n_dec, dtype=np.int64), np.ascontiguousarray(context, dtype=float),
            np.asarray(n_pre, dtype=np.int64), np.ascontiguousarray(prompt, dtype=float))
        plain = self.cap is not None and self._within_cap(*rows)
        out = self._work(*rows, time, plain)
        if plain and not np.all(out["full_s"] > 0.0):  # (an iteration of no time: the solve decides)
            out = self._work(*rows, time, False)
        return out

    def _within_cap(self, tokens, logits, n_dec, context, n_pre, prompt):
        """Whether every iteration (arrays) surely stays within the power limit at the top clock: decodes alone where no
        decode iteration reaches it (:attr:`_decode_free`), the others by :meth:`_below_cap`'s bound."""
        if not (self._unclipped and self._decode_free):
            return False
        rows = np.flatnonzero(~((tokens == logits) & (n_pre == 0) & (n_dec > 0)))
        jt, wt, logits, jc, wc, jp, wp = self._at(tokens[rows], logits[rows], n_dec[rows], context[rows], n_pre[rows],
                                                  prompt[rows])
        if self._pair_arrays is None:
            self._pair_arrays = tuple(np.asarray(w) for w in self._pair_w)
        lin, head, decode, prefill = self._pair_arrays
        inside = (0.0 <= wt) & (wt <= 1.0) & (0.0 <= wc) & (wc <= 1.0) & (0.0 <= wp) & (wp <= 1.0)
        return bool(np.all(inside & (np.maximum(np.maximum(lin[jt], head[logits]), np.maximum(decode[jc], prefill[jp]))
                                     <= self.cap)))

    def _work(self, tokens, logits, n_dec, context, n_pre, prompt, time, plain):
        """:meth:`work` (``plain``: every iteration within the cap at the top clock, no solve)."""
        keys = self._stacked(plain)[0]
        v = np.empty((len(tokens), len(keys)), order="F")  # (a column per quantity: each read without a copy)
        for start in range(0, len(tokens), _BLOCK_ROWS):  # (a block of rows at a time: the reads stay in cache)
            at = slice(start, start + _BLOCK_ROWS)
            self._read(v[at], tokens[at], logits[at], n_dec[at], context[at], n_pre[at], prompt[at], plain)
        out = {}
        for k, key in enumerate(keys):
            if key == "time_s" and not time and self.cap is None and not self.overlap:
                continue
            out[key] = v[:, k] / self.pp if key in WORK else np.ascontiguousarray(v[:, k])
        seqs = n_dec.astype(float) + n_pre.astype(float)
        if "time_s" not in out:  # (no host time hidden)
            out["gap_s"] = self.host_s(seqs, out["launch_s"])
            return out
        out["time_s"] = out["time_s"] + self.overhead_s + self.per_seq_s * seqs
        out["time_s"] -= (hidden := hidden_host(out["time_s"], self.overhead_s + self.per_seq_s * seqs, self.overlap))
        out["hidden_s"] = hidden  # (the host time the kernels hide: no wait, :meth:`host_s`)
        out["gap_s"] = self.host_s(seqs, out["launch_s"]) - hidden
        if plain:
            out["full_s"] = out["time_s"]
            out["clock_ratio"], out["time_s"] = np.ones(len(tokens)), out["time_s"].copy()
        elif self.cap is not None:
            out["full_s"] = out["time_s"]
            out["clock_ratio"], out["time_s"], _ = span_under_cap(
                self.power_columns, self.cap, out["time_s"], *(out.pop(key) for key in SPAN), out["flops"],
                out["hbm_bytes"], out["link_bytes"], 0.0, out["gap_s"])
        return out

    def _read(self, v, tokens, logits, n_dec, context, n_pre, prompt, plain=False):
        """:meth:`work`'s table reads for some iterations (arrays), into ``v``, a row each and a column
        per quantity of :meth:`_stacked`, read together. Decodes alone (as many tokens as logits,
        no prefill piece) read the token terms and LM head once per count; the others all four
        tables, the attention ones only where they have decodes (prefill pieces)."""
        _, (linear, head, decode, prefill), by_seqs = self._stacked(plain)

        def lerp(table, j, w):  # (:func:`_lerp`, each entry's difference to the next taken once)
            return table[0][j] + w[:, None] * table[1][j]

        alone = (tokens == logits) & (n_pre == 0) & (n_dec > 0)
        rows = np.flatnonzero(alone)
        jc, wc = self.context.locate(context[rows])
        v[rows] = by_seqs[logits[rows]] + lerp(decode, n_dec[rows] * self.context.size + jc, wc)
        rows = np.flatnonzero(~alone)
        jt, wt = self.tokens.locate(tokens[rows])
        w = lerp(linear, jt, wt) + head[logits[rows]]
        dec, pre = np.flatnonzero(n_dec[rows]), np.flatnonzero(n_pre[rows])
        jc, wc = self.context.locate(context[rows][dec])
        w[dec] += lerp(decode, n_dec[rows][dec] * self.context.size + jc, wc)
        jp, wp = self.prompt.locate(prompt[rows][pre])
        w[pre] += lerp(prefill, n_pre[rows][pre] * self.prompt.size + jp, wp)
        v[rows] = w

    def _stacked(self, plain=False):
        """The quantities :meth:`work` reads and their tables side by side: ``(keys, (linear, head,
        decode, prefill), by_seqs)``, each table a column per key (with the LM head's, the token
        terms and attention tables come as ``(table, difference of each row to the next)``);
        ``by_seqs`` the token terms and LM head of ``n`` tokens with ``n`` logits, row ``n``
        (``plain``: without the parts the clock solve reads)."""
        keys = ("time_s", *(WORK if self.cap is None or plain else _CAPPED), "launch_s")
        if keys not in self._columns:
            tables = [np.stack([self._arrays[key][i] for key in keys], axis=1) for i in range(4)]
            jt, wt = self.tokens.locate(np.arange(len(tables[1]), dtype=float))
            by_seqs = _lerp(tables[0], jt, wt[:, None]) + tables[1]
            tables[0], tables[2], tables[3] = ((t, np.diff(t, axis=0)) for i, t in enumerate(tables) if i != 1)
            self._columns[keys] = keys, tuple(tables), by_seqs
        return self._columns[keys]

    def decode_steps_s(self, n, contexts):
        """Decode iterations of ``n`` sequences at each of ``contexts`` (array), s."""
        contexts = np.asarray(contexts, dtype=float)
        if self.cap is not None:
            many = np.full(len(contexts), n)
            return self.work(many, many, many, contexts, 0 * many, 0.0 * contexts)["time_s"]
        j, w = self.context.locate(contexts)
        t = self._base[n] + _lerp(self._arrays["time_s"][2], n * self.context.size + j, w)
        return t - hidden_host(t, self.overhead_s + self.per_seq_s * n, self.overlap)


def kv_transfer_s(c, tokens, *, same_node):
    """Seconds to ship the KV cache of ``tokens`` tokens from a prefill to a decode instance.

    Each device of the prefill instance sends its shard (its KV heads, its pipeline stage's layers) to its peer in the
    decode instance: a point-to-point transfer on the scale-up fabric when both sit in one node, else on the scale-out
    network (:func:`perfsim.cost.price.group_collective`)."""
    size = np.asarray(tokens, dtype=float) * kv_bytes_per_device_token(c)
    stride = 1.0 if same_node else float(np.asarray(c["devices_per_node"]))
    return group_collective(c, "send_recv", size, 2.0, stride=stride)


def kv_transfer_bytes(c, tokens):
    """Bytes one device sends to ship the KV cache of ``tokens`` tokens."""
    return np.asarray(tokens, dtype=float) * kv_bytes_per_device_token(c)
