"""Schedulers of the serving simulator: one class per kind of instance.

Each instance (``tp × pp`` devices) runs one scheduler:

``static``
    When idle, take up to ``max_batch`` waiting requests whose whole KV cache (prompt plus
    generated tokens) fits, prefill them as one pass and decode until the longest is done. Slots
    of requests that finish early stay in the batch (padded, as FasterTransformer and Hugging
    Face ``generate`` run them) and are not refilled; those requests return at their last token.
``continuous``
    Iteration-level batching (Orca, vLLM): before every iteration admit waiting requests while
    ``max_batch`` sequences and the paged KV cache (blocks of 16 tokens, 1 % of the blocks kept
    free as vLLM's watermark) allow and the prompts stay within ``max_prefill_tokens``; new
    prompts run as a prefill iteration of their own (prefill first, as vLLM's default
    scheduler), otherwise all running sequences decode one token. When a decode step needs a
    block the cache does not have, the newest sequence is preempted and recomputed later (its
    prompt and the tokens generated so far are prefilled again).
``chunked-prefill``
    Each iteration has a budget of ``chunk_size`` tokens (SARATHI, vLLM chunked prefill): all
    running decodes first, then chunks of waiting prompts fill the rest.

With ``disaggregate`` (Splitwise, DistServe) prefill instances only prefill and decode instances
only decode. An instance's ``begin(t)`` starts its next iteration and returns its length (None:
nothing to run), ``end(t)`` applies it; requests leaving the instance go to ``out``. Iteration
times come from :class:`~perfsim.events.serving.iteration_cost.IterationCost`. The running batch
is kept as aggregates (:class:`~perfsim.events.serving.batching.Batching`), so a decode iteration
costs O(1) however large the batch.
"""

from __future__ import annotations

import numpy as np

from perfsim.events.serving import chunked_loop
from perfsim.events.serving.batching import Batching, Instance
from perfsim.events.serving.iteration_cost import chunk_pairs, equivalent_prompt
from perfsim.events.serving.state import (
    COLUMNS,
    DECODE,
    DONE,
    MIXED,
    PREFILL,
    PREFILLING,
    blocks_for,
)


class ContinuousInstance(Batching):
    """Prefill-first iteration-level batching (vLLM's default scheduler). Its :meth:`begin` and
    :meth:`end` take one step at a time; :meth:`~perfsim.events.serving.batching.Batching.run`
    runs the same steps in its loop."""

    loop_prefills = True

    def begin(self, t):
        cfg = self.cfg
        if self.waiting and self.n_run < cfg.max_batch:
            # admit waiting prompts FCFS while tokens, sequences and KV blocks allow
            req = self.req
            admitted = []
            tokens = 0
            pairs = 0.0
            while self.waiting and len(admitted) < cfg.max_batch - self.n_run:
                r = self.waiting[0]
                kv_len = req.prompt[r] + req.done[r]
                if admitted and tokens + kv_len > max(cfg.max_prefill_tokens, 1):
                    break
                if not self.take_blocks(blocks_for(kv_len)):
                    break
                self.waiting.popleft()
                self.push(r)
                req.state[r] = PREFILLING
                admitted.append(r)
                tokens += kv_len
                pairs += kv_len * (kv_len + 1.0) / 2.0
            if admitted:
                n = len(admitted)
                equivalent, dur, over = self.cost.price_pairs(tokens, n, pairs)
                self.cost.over_cap += over
                self.pending = admitted
                self.kind = PREFILL
                self.rec.rows.append((t, dur, PREFILL, tokens, n, 0, 0.0, n, equivalent,
                                      self.total_blocks - self.free, self.n_run + n))
                return dur
        if self.n_run:
            context = self.start_decode()
            n = self.n_run
            if not n:  # everything was preempted: admit again
                return self.begin(t)
            dur = self.cost.decode_step_s(n, context)
            self.kind = DECODE
            self.rec.rows.append((t, dur, DECODE, n, n, n, context, 0, 0.0, self.total_blocks - self.free, n))
            return dur
        return None

    def end(self, t):
        if self.kind == DECODE:
            self.end_decode(t)
            return
        req = self.req
        for r in self.pending:
            self.after_prefill(r, t, req.prompt[r] + req.done[r])
        self.pending = ()


class ChunkedInstance(Batching):
    """Token-budget iterations: decodes first, then prompt chunks (SARATHI-Serve, vLLM chunked prefill). Its
    :meth:`begin` and :meth:`end` take one step at a time; :meth:`run` (:func:`perfsim.events.serving.chunked_loop.run`)
    runs the same steps in its loop."""

    def run(self, t, horizon, arrivals=None, i=0):
        return chunked_loop.run(self, t, horizon, arrivals, i)

    def begin(self, t):
        cfg = self.cfg
        req = self.req
        context = self.start_decode() if self.n_run else 0.0
        n_dec = self.n_run
        budget = cfg.chunk_size - n_dec
        pieces = []
        tokens = n_dec
        pairs = 0.0
        completing = 0
        for r in self.prefilling:
            if budget <= 0:
                break
            target = req.prompt[r] + req.done[r]
            cached = req.prefilled[r]
            q = min(target - cached, budget)
            pieces.append((r, q))
            budget -= q
            tokens += q
            pairs += chunk_pairs(q, cached)
            completing += cached + q == target
        while budget > 0 and self.waiting and n_dec + len(self.prefilling) < cfg.max_batch:
            r = self.waiting[0]
            target = req.prompt[r] + req.done[r]
            need = blocks_for(target)
            if not self.take_blocks(need):
                break
            self.waiting.popleft()
            self.push(r)
            req.state[r] = PREFILLING
            req.prefilled[r] = 0
            self.prefilling.append(r)
            q = min(target, budget)
            pieces.append((r, q))
            budget -= q
            tokens += q
            pairs += chunk_pairs(q, 0)
            completing += q == target
        if not n_dec and not pieces:
            return None
        n_pre = len(pieces)
        if n_pre:
            prompt = equivalent_prompt(pairs / n_pre)
            dur = self.cost.mixed_step_s(tokens, n_dec + completing, n_dec, context, n_pre, prompt)
        else:  # decodes alone
            prompt = 0.0
            dur = self.cost.decode_step_s(n_dec, context)
        self.n_dec = n_dec
        self.pieces = pieces
        self.kind = kind = MIXED if n_dec and n_pre else (DECODE if n_dec else PREFILL)
        self.rec.rows.append((t, dur, kind, tokens, n_dec + completing, n_dec, context, n_pre, prompt,
                              self.total_blocks - self.free, n_dec + len(self.prefilling)))
        return dur

    def end(self, t):
        if self.n_dec:
            self.end_decode(t)
        req = self.req
        for r, q in self.pieces:
            req.prefilled[r] += q
            target = req.prompt[r] + req.done[r]
            if req.prefilled[r] >= target:
                self.prefilling.remove(r)
                self.after_prefill(r, t, target)
        self.pieces = ()


class StaticInstance(Instance):
    """Request-level batching: one batch at a time, prefill then decode to the longest request."""

    def begin(self, t):
        if not self.waiting:
            return None
        req = self.req
        batch = []
        blocks = 0
        while self.waiting and len(batch) < self.cfg.max_batch:
            r = self.waiting[0]
            need = blocks_for(req.prompt[r] + req.gen[r])
            if batch and blocks + need > self.total_blocks:
                break
            self.waiting.popleft()
            batch.append(r)
            blocks += need
        n = len(batch)
        prompts = np.asarray([req.prompt[r] for r in batch], dtype=float)
        gens = np.asarray([req.gen[r] for r in batch], dtype=np.int64)
        tokens = float(prompts.sum())
        prompt = equivalent_prompt(float(np.mean(prompts * (prompts + 1.0) / 2.0)))
        pre = self.cost.prefill_step_s(tokens, n, prompt)
        longest = int(gens.max())
        steps = np.arange(1, longest, dtype=float)
        contexts = float(prompts.mean()) + steps
        durs = self.cost.decode_steps_s(n, contexts) if longest > 1 else np.zeros(0)
        t_first = t + pre
        ends = t_first + np.cumsum(durs)
        finish = np.where(gens > 1, ends[np.maximum(gens - 2, 0)] if longest > 1 else t_first, t_first)
        for i, r in enumerate(batch):
            req.first[r] = t_first
            req.finish[r] = float(finish[i])
            req.done[r] = req.gen[r]
            req.state[r] = DONE
        if longest > 1:
            # the token of step j reaches every request still generating: gap durs[j - 1]
            counts = n - np.cumsum(np.bincount(gens, minlength=longest + 1))[1:longest]
            keep = counts > 0
            req.itl_value.extend(durs[keep].tolist())
            req.itl_weight.extend(counts[keep].tolist())
        self.rec.rows.append((t, pre, PREFILL, tokens, n, 0, 0.0, n, prompt, blocks, n))
        if longest > 1:
            block = np.empty((longest - 1, len(COLUMNS)))
            block[:] = (0.0, 0.0, DECODE, n, n, n, 0.0, 0, 0.0, blocks, n)  # decode rows: start, length, context
            block[:, 0], block[:, 1], block[:, 6] = ends - durs, durs, contexts
            self.rec.blocks.append(block)
        self.batch = batch
        return pre + float(durs.sum())

    def end(self, t):
        self.load -= len(self.batch)
        self.batch = ()


class PrefillInstance(Instance):
    """Disaggregated prefill pool member: prefill-only iterations, the KV cache leaves at the end."""

    role = "prefill instance"

    def begin(self, t):
        if not self.waiting:
            return None
        req = self.req
        cfg = self.cfg
        limit = cfg.chunk_size if cfg.scheduler == "chunked-prefill" else cfg.max_prefill_tokens
        batch = []
        tokens = 0
        pairs = 0.0
        blocks = 0
        while self.waiting and len(batch) < cfg.max_batch:
            r = self.waiting[0]
            kv_len = req.prompt[r] + req.done[r]
            need = blocks_for(kv_len)
            if batch and (tokens + kv_len > limit or blocks + need > self.total_blocks):
                break
            self.waiting.popleft()
            batch.append(r)
            tokens += kv_len
            pairs += kv_len * (kv_len + 1.0) / 2.0
            blocks += need
        n = len(batch)
        prompt = equivalent_prompt(pairs / n)
        dur = self.cost.prefill_step_s(tokens, n, prompt)
        self.batch = batch
        self.rec.rows.append((t, dur, PREFILL, tokens, n, 0, 0.0, n, prompt, blocks, n))
        return dur

    def end(self, t):
        self.load -= len(self.batch)
        self.out.extend(self.batch)
        self.batch = ()


class DecodeInstance(Batching):
    """Disaggregated decode pool member: admits shipped KV caches, decode-only iterations."""

    role = "decode instance"
    loop_admits = True  # (:meth:`~perfsim.events.serving.batching.Batching.run` takes the steps of :meth:`begin`)

    def requeue(self, r):
        self.load -= 1
        self.out.append(r)  # back to a prefill instance to recompute its cache

    def begin(self, t):
        req = self.req
        cfg = self.cfg
        while self.waiting and self.n_run < cfg.max_batch:
            r = self.waiting[0]
            kv_len = req.prompt[r] + req.done[r] - 1  # the latest token is not in the cache yet
            need = blocks_for(kv_len)
            if not self.take_blocks(need):
                break
            self.waiting.popleft()
            self.push(r)
            self.join(r, kv_len, req.last_tok[r])
        if not self.n_run:
            return None
        context = self.start_decode()
        n = self.n_run
        if not n:
            return self.begin(t)
        dur = self.cost.decode_step_s(n, context)
        self.kind = DECODE
        self.rec.rows.append((t, dur, DECODE, n, n, n, context, 0, 0.0, self.total_blocks - self.free, n))
        return dur

    def end(self, t):
        self.end_decode(t)
