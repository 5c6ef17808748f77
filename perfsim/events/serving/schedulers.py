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
is kept as aggregates (sequences, summed context, counts per KV-block phase, finish step per
request), so a decode iteration costs O(1) however large the batch.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

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
    WAITING,
    Records,
    RequestState,
    blocks_for,
)

WATERMARK = 0.01  # fraction of blocks vLLM keeps free when admitting prompts


class _Instance:
    """An instance of ``cfg`` (the run's :class:`~perfsim.events.serving.simulator.ServeConfig`) with a
    KV pool of ``kv_blocks`` blocks, pricing its iterations with ``cost``."""

    role = "instance"
    fast = False  # whether :meth:`run` applies its iterations back to back (no request leaves at an iteration's end)

    def __init__(self, index, cost, req: RequestState, cfg, kv_blocks):
        self.index = index
        self.cost = cost
        self.req = req
        self.cfg = cfg
        self.total_blocks = kv_blocks
        self.free = kv_blocks
        self.watermark = int(WATERMARK * kv_blocks)
        self.waiting: deque = deque()
        self.load = 0
        self.idle = True
        self.rec = Records()
        self.busy_s = 0.0
        self.out: list = []  # requests leaving the instance (handed to the simulator)

    @property
    def name(self):
        return f"{self.role} {self.index}"

    def take_blocks(self, need) -> bool:
        """Reserve ``need`` KV blocks for a request joining the batch, if the pool allows: the
        watermark stays free, except that a request alone in an empty pool may use it all."""
        if self.free - need < self.watermark and not (self.free == self.total_blocks and need <= self.free):
            return False
        self.free -= need
        return True

    def enqueue(self, r, front=False):
        self.load += 1
        if front:
            self.waiting.appendleft(r)
        else:
            self.waiting.append(r)

    def run(self, t, horizon):
        """The iteration under way ended at ``t``: apply it and start the next, and so on while each
        ends before ``horizon`` and no request leaves the instance; returns the start and length of
        the iteration under way (length None: nothing to run)."""
        while True:
            self.end(t)
            dur = self.begin(t)
            if dur is None:
                return t, None
            self.busy_s += dur
            end = t + dur
            if self.out or not end < horizon:
                return t, dur
            t = end

    def produce(self, r, t):
        """Request ``r`` gets a token at ``t`` from a prefill (its first, or the next after a recompute)."""
        req = self.req
        if req.first[r] != req.first[r]:  # nan: the first token
            req.first[r] = t
        else:
            req.itl_value.append(t - req.last_tok[r])
            req.itl_weight.append(1)
        req.last_tok[r] = t
        req.done[r] += 1
        return req.gen[r] - req.done[r]


class _Batching(_Instance):
    """The running batch of an iteration-level scheduler, as aggregates.

    A running request's KV length is ``kv_base + D`` where ``D`` counts this instance's decode
    steps, so the summed context is ``S + n × D`` and the requests that need a new block at step
    ``D`` are those with ``kv_base ≡ -D (mod 16)``.
    """

    fast = True

    def __init__(self, *args):
        super().__init__(*args)
        self.D = 0
        self.n_run = 0
        self.S = 0
        self.phase = [0] * BLOCK_TOKENS
        self.finish_at: dict = {}
        self.stack: list = []  # (request, admission id), newest last
        self.groups: dict = {}  # last-token time -> running requests that got it then
        self.last_decode_end = -math.inf
        self.admissions = 0
        self.prefilling: list = []
        self.n_dec = 0  # decodes in the iteration under way

    def push(self, r):
        self.admissions += 1
        self.req.admit[r] = self.admissions
        self.stack.append((r, self.admissions))

    def join(self, r, kv_len, t):
        """``r`` (KV of ``kv_len`` tokens, last token at ``t``) decodes from the next step on."""
        req = self.req
        D = self.D
        base = kv_len - D
        req.kv_base[r] = base
        req.join_step[r] = D
        req.join_done[r] = req.done[r]
        req.join_time[r] = t
        step = D + req.gen[r] - req.done[r] - 1
        req.finish_step[r] = step
        lst = self.finish_at.get(step)
        if lst is None:
            self.finish_at[step] = [r]
        else:
            lst.append(r)
        req.state[r] = DECODING
        self.n_run += 1
        self.S += base
        self.phase[base % BLOCK_TOKENS] += 1
        self.groups[t] = self.groups.get(t, 0) + 1

    def _leave(self, r):
        req = self.req
        base = req.kv_base[r]
        self.n_run -= 1
        self.S -= base
        self.phase[base % BLOCK_TOKENS] -= 1
        req.finish_step[r] = -1

    def preempt(self, need):
        """Free blocks by recomputing the newest sequences until ``need`` blocks fit; returns ``need``."""
        req = self.req
        while need > self.free and self.stack:
            r, admission = self.stack.pop()
            if req.admit[r] != admission or req.state[r] not in (DECODING, PREFILLING):
                continue
            req.preemptions += 1
            if req.state[r] == DECODING:
                kv_len = req.kv_base[r] + self.D
                if kv_len % BLOCK_TOKENS == 0:
                    need -= 1
                self._leave(r)
                t_last = req.join_time[r] if req.join_step[r] == self.D else self.last_decode_end
                req.last_tok[r] = t_last
                left = self.groups.get(t_last, 0) - 1
                if left > 0:
                    self.groups[t_last] = left
                else:
                    self.groups.pop(t_last, None)
                req.done[r] = req.join_done[r] + (self.D - req.join_step[r])
                self.free += blocks_for(kv_len)
            else:
                self.prefilling.remove(r)
                self.free += blocks_for(req.prompt[r] + req.done[r])
                req.prefilled[r] = 0
            req.state[r] = WAITING
            self.requeue(r)
        return need

    def requeue(self, r):
        self.waiting.appendleft(r)

    def start_decode(self):
        """Allocate this step's blocks (preempting if needed); returns the mean attended context."""
        D = self.D
        need = self.phase[(-D) % BLOCK_TOKENS]
        if need > self.free:
            need = self.preempt(need)
        self.free -= need
        n = self.n_run
        if not n:
            return 0.0
        return (self.S + n * D) / n + 1.0

    def end_decode(self, t):
        """Every running sequence got a token at ``t``; retire those that are done."""
        req = self.req
        for t_last, count in self.groups.items():
            req.itl_value.append(t - t_last)
            req.itl_weight.append(count)
        step = self.D
        self.D = step + 1
        finished = self.finish_at.pop(step, None)
        if finished:
            D = self.D
            for r in finished:
                if req.finish_step[r] != step or req.state[r] != DECODING:
                    continue
                self.free += blocks_for(req.kv_base[r] + D)
                self._leave(r)
                req.done[r] = req.gen[r]
                req.finish[r] = t
                req.last_tok[r] = t
                req.state[r] = DONE
                self.load -= 1
        self.groups = {t: self.n_run} if self.n_run else {}
        self.last_decode_end = t

    def after_prefill(self, r, t, kv_len):
        """``r`` finished its prefill at ``t``: its token, then decoding or done."""
        req = self.req
        left = self.produce(r, t)
        if left <= 0:
            req.finish[r] = t
            req.state[r] = DONE
            self.free += blocks_for(kv_len)
            self.load -= 1
        else:
            self.join(r, kv_len, t)

    def admit_prompts(self, limit_tokens, limit_seqs):
        """Admit waiting prompts FCFS while tokens, sequences and KV blocks allow."""
        req = self.req
        admitted = []
        tokens = 0
        pairs = 0.0
        while self.waiting and len(admitted) < limit_seqs:
            r = self.waiting[0]
            kv_len = req.prompt[r] + req.done[r]
            if admitted and tokens + kv_len > limit_tokens:
                break
            need = blocks_for(kv_len)
            if not self.take_blocks(need):
                break
            self.waiting.popleft()
            admitted.append(r)
            tokens += kv_len
            pairs += kv_len * (kv_len + 1.0) / 2.0
        return admitted, tokens, pairs


class ContinuousInstance(_Batching):
    """Prefill-first iteration-level batching (vLLM's default scheduler)."""

    def begin(self, t):
        cfg = self.cfg
        if self.waiting and self.n_run < cfg.max_batch:
            admitted, tokens, pairs = self.admit_prompts(max(cfg.max_prefill_tokens, 1), cfg.max_batch - self.n_run)
            if admitted:
                for r in admitted:
                    self.push(r)
                    self.req.state[r] = PREFILLING
                n = len(admitted)
                prompt = equivalent_prompt(pairs / n)
                dur = self.cost.prefill_step_s(tokens, n, prompt)
                self.pending = admitted
                self.kind = PREFILL
                self.rec.rows.append((t, dur, PREFILL, tokens, n, 0, 0.0, n, prompt,
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
        else:
            req = self.req
            for r in self.pending:
                self.after_prefill(r, t, req.prompt[r] + req.done[r])
            self.pending = ()


class ChunkedInstance(_Batching):
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
        kind = MIXED if n_dec and n_pre else (DECODE if n_dec else PREFILL)
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


class StaticInstance(_Instance):
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


class PrefillInstance(_Instance):
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


class DecodeInstance(_Batching):
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
        self.rec.rows.append((t, dur, DECODE, n, n, n, context, 0, 0.0, self.total_blocks - self.free, n))
        return dur

    def end(self, t):
        self.end_decode(t)
