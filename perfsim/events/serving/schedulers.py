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

from perfsim.events.serving.batching import Batching, Instance
from perfsim.events.serving.iteration_cost import chunk_pairs, equivalent_prompt
from perfsim.events.serving.state import (
    BLOCK_TOKENS,
    COLUMNS,
    DECODE,
    DECODING,
    DONE,
    MIXED,
    PREFILL,
    PREFILLING,
    blocks_for,
)


class ContinuousInstance(Batching):
    """Prefill-first iteration-level batching (vLLM's default scheduler)."""

    def begin(self, t):
        cfg = self.cfg
        waiting = self.waiting
        if waiting and self.n_run < cfg.max_batch:
            # admit waiting prompts FCFS while tokens, sequences and KV blocks allow (:meth:`take_blocks`)
            req = self.req
            prompt, done, admit, state, stack = req.prompt, req.done, req.admit, req.state, self.stack
            free, total, mark, k = self.free, self.total_blocks, self.watermark, self.admissions
            limit_tokens, limit_seqs = max(cfg.max_prefill_tokens, 1), cfg.max_batch - self.n_run
            admitted = []
            tokens = 0
            pairs = 0.0
            while waiting and len(admitted) < limit_seqs:
                r = waiting[0]
                kv_len = prompt[r] + done[r]
                if admitted and tokens + kv_len > limit_tokens:
                    break
                need = -(-kv_len // BLOCK_TOKENS)
                if free - need < mark and not (free == total and need <= free):
                    break
                free -= need
                waiting.popleft()
                admitted.append(r)
                tokens += kv_len
                pairs += kv_len * (kv_len + 1.0) / 2.0
                k += 1  # (:meth:`push`)
                admit[r] = k
                stack.append((r, k))
                state[r] = PREFILLING
            if admitted:
                self.free, self.admissions = free, k
                n = len(admitted)
                equivalent, dur = self.cost.prefill_of_pairs(tokens, n, pairs)
                self.pending = admitted
                self.kind = PREFILL
                self.rec.rows.append((t, dur, PREFILL, tokens, n, 0, 0.0, n, equivalent, total - free,
                                      self.n_run + n))
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
        else:
            self._end_prefill(t)

    def _end_prefill(self, t):
        """The prompts of the prefill iteration under way got their token at ``t``: each is done or
        joins the decoding batch (:meth:`after_prefill` and :meth:`join`, in one loop)."""
        req = self.req
        prompt, done, gen, first, last_tok, state = req.prompt, req.done, req.gen, req.first, req.last_tok, req.state
        kv_base, join_step, join_done, join_time, finish_step = \
            req.kv_base, req.join_step, req.join_done, req.join_time, req.finish_step
        finish_at, phase = self.finish_at, self.phase
        D = self.D
        joined = 0
        for r in self.pending:
            kv_len = prompt[r] + done[r]
            if first[r] != first[r]:  # nan: the first token
                first[r] = t
            else:
                req.itl_value.append(t - last_tok[r])
                req.itl_weight.append(1)
            last_tok[r] = t
            k = done[r] + 1
            done[r] = k
            if gen[r] - k <= 0:
                req.finish[r] = t
                state[r] = DONE
                self.free += blocks_for(kv_len)
                self.load -= 1
                continue
            base = kv_len - D
            kv_base[r] = base
            join_step[r] = D
            join_done[r] = k
            join_time[r] = t
            step = D + gen[r] - k - 1
            finish_step[r] = step
            lst = finish_at.get(step)
            if lst is None:
                finish_at[step] = [r]
            else:
                lst.append(r)
            state[r] = DECODING
            self.S += base
            phase[base % BLOCK_TOKENS] += 1
            joined += 1
        if joined:
            self.n_run += joined
            self.groups[t] = self.groups.get(t, 0) + joined
        self.pending = ()


class ChunkedInstance(Batching):
    """Token-budget iterations: decodes first, then prompt chunks (SARATHI-Serve, vLLM chunked prefill)."""

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
