"""An instance of the serving simulator and the running batch of an iteration-level scheduler.

:class:`Instance` holds what every kind of instance has (waiting requests, its KV-block pool, its
iteration records); :class:`Batching` keeps an iteration-level scheduler's running batch as
aggregates (sequences, summed context, counts per KV-block phase, finish step per request), so a
decode iteration costs O(1) however large the batch, and runs back-to-back decode iterations (and
prefill-first batching's prefill iterations) in one loop (:meth:`Batching.run`). The schedulers are
in :mod:`perfsim.events.serving.schedulers`.
"""

from __future__ import annotations

import math
from collections import deque

from perfsim.events.serving.state import (
    BLOCK_TOKENS,
    DECODE,
    DECODING,
    DONE,
    PREFILL,
    PREFILLING,
    WAITING,
    Records,
    RequestState,
    blocks_for,
)

WATERMARK = 0.01  # fraction of blocks vLLM keeps free when admitting prompts


class Instance:
    """An instance of ``cfg`` (the run's :class:`~perfsim.events.serving.simulator.ServeConfig`) with a
    KV pool of ``kv_blocks`` blocks, pricing its iterations with ``cost``."""

    role = "instance"
    fast = False  # whether it has :meth:`Batching.run`

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


class Batching(Instance):
    """The running batch of an iteration-level scheduler, as aggregates.

    A running request's KV length is ``kv_base + D`` where ``D`` counts this instance's decode
    steps, so the summed context is ``S + n × D`` and the requests that need a new block at step
    ``D`` are those with ``kv_base ≡ -D (mod 16)``.
    """

    fast = True
    loop_prefills = False  # whether :meth:`run` admits and prefills prompts itself (prefill-first batching)
    loop_admits = False  # whether :meth:`run` admits shipped KV caches itself (a disaggregated decode instance)

    def __init__(self, *args):
        super().__init__(*args)
        self.D = 0
        self.n_run = 0
        self.S = 0
        self.phase = [0] * BLOCK_TOKENS
        self.finish_at: dict = {}
        self.stack: list = []  # admitted requests, newest last (:meth:`preempt` takes the newest back)
        self.stack_ids: list = []  # each one's admission id then (entries of older admissions are stale)
        self.groups: dict = {}  # last-token time -> running requests that got it then
        self.last_decode_end = -math.inf
        self.admissions = 0
        self.prefilling: list = []
        self.singles: dict = {}  # tokens -> the price of a prefill of one prompt of them (:meth:`run`)
        self.pending = ()  # the prompts of a prefill iteration under way (prefill-first batching)
        self.n_dec = 0  # decodes in the iteration under way
        self.kind = None  # the kind of the iteration under way (a decode one: :meth:`run` applies it)
        self.cell = self.cost.context.cell(0.0)  # where the latest decode context fell on the context axis
        req, rec = self.req, self.rec
        #: what :meth:`run` reads of the requests and writes to the records, bound once (it runs once per
        #: event reaching the instance)
        self.bound = (req.finish_step, req.state, req.kv_base, req.done, req.gen, req.prompt, req.first, req.last_tok,
                      req.finish, req.admit, req.join_step, req.itl_value.append, req.itl_weight.append,
                      rec.views, rec.filled,
                      self.stack.append, self.stack_ids.append, req.itl_value, req.itl_runs.extend, id(rec))
        cost = self.cost  # (and what it reads of the instance and its cost tables)
        self.held = (self.phase, self.finish_at, self.total_blocks, self.watermark, cost.decode_lookup(),
                     cost.decode_step_s, cost.context, cost.price_pairs, self.singles, self.waiting, self.cfg.max_batch,
                     max(self.cfg.max_prefill_tokens, 1), self.loop_prefills, self.loop_admits)

    def push(self, r):
        self.admissions += 1
        self.req.admit[r] = self.admissions
        self.stack.append(r)
        self.stack_ids.append(self.admissions)

    def join(self, r, kv_len, t):
        """``r`` (KV of ``kv_len`` tokens, last token at ``t``) decodes from the next step on."""
        req = self.req
        D = self.D
        base = kv_len - D
        req.kv_base[r] = base
        req.join_step[r] = D
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
            r, admission = self.stack.pop(), self.stack_ids.pop()
            if req.admit[r] != admission or req.state[r] not in (DECODING, PREFILLING):
                continue
            req.preemptions += 1
            if req.state[r] == DECODING:
                kv_len = req.kv_base[r] + self.D
                if kv_len % BLOCK_TOKENS == 0:
                    need -= 1
                self._leave(r)
                t_last = req.last_tok[r] if req.join_step[r] == self.D else self.last_decode_end
                req.last_tok[r] = t_last
                left = self.groups.get(t_last, 0) - 1
                if left > 0:
                    self.groups[t_last] = left
                else:
                    self.groups.pop(t_last, None)
                req.done[r] += self.D - req.join_step[r]
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

    def run(self, t, horizon, arrivals=None, i=0):
        """The iteration under way ended at ``t``: apply it and start the next, and so on while each
        ends before ``horizon`` and no request leaves the instance; returns the start and length of
        the iteration under way (length None: nothing to run) and ``i``. With ``arrivals`` (the
        instance is the only one) the requests from ``i`` on arrive here as their time comes: a
        request arriving by an iteration's end is queued before the next one starts.

        The common iterations run in one loop, the batch's aggregates in local variables: a decode
        iteration ends (:meth:`end_decode`) and the next is a decode iteration again (nothing to
        admit, its blocks free: :meth:`start_decode` and
        :meth:`~perfsim.events.serving.iteration_cost.IterationCost.decode_step_s`, read from its
        tables here where the power cap surely does not slow it, else priced by it); with
        :attr:`loop_prefills`, prompts are admitted and prefilled too (the prefill of
        :meth:`begin`, and its end: :meth:`after_prefill` for each prompt), the same steps in the
        same order; with :attr:`loop_admits`, shipped caches join the batch as a decode instance's
        :meth:`begin` takes them in (its decode then priced as there). Anything else goes through
        :meth:`end` and :meth:`begin`."""
        (finish_step, state, kv_base, done, gen, prompt, first, last_tok, finish, admit, join_step, itl_value,
         itl_weight, views, filled, stack, stack_ids, itl_values, itl_run, rec_id) = self.bound
        (row_start, row_dur, row_seqs, row_context, row_used), \
            (pre_start, pre_dur, pre_tokens, pre_prompts, pre_prompt, pre_used, pre_running) = views
        d_rows, p_rows = filled  # (the packed columns' rows written, and their room: :meth:`Records.grow`)
        d_room, p_room = len(row_start), len(pre_start)
        (phase, finish_at, total, mark, lookup, decode_step, axis, price_pairs, singles, waiting, most, limit_tokens,
         prefills, admits) = self.held
        base, table, slope, width, clear = lookup
        cost = self.cost
        n_arr = len(arrivals) if arrivals is not None else 0
        t_arr = arrivals[i] if i < n_arr else math.inf
        kind = self.kind  # (None: applied, nothing under way)
        while True:
            if kind is not None and kind != DECODE and not prefills:  # (its end not in the loop below)
                self.end(t)
                kind = None
            D, n, S, free, load, groups, busy, pending = self.D, self.n_run, self.S, self.free, self.load, \
                self.groups, self.busy_s, self.pending
            steady = not self.prefilling
            base = lookup[0]  # (None: each decode priced on its own)
            j, lo, hi, x0, dx = self.cell
            last = None  # (the latest decode end in this stretch: the running sequences, n, got a token then)
            run_lo = d_rows  # (the decode rows from here on whose ends follow one in the stretch: their gaps are
            # their lengths, read from the records at the end, RequestState.itl, not appended one by one)
            while True:
                if t >= t_arr:
                    while t_arr <= t:  # (:meth:`enqueue`)
                        waiting.append(i)
                        load += 1
                        i += 1
                        t_arr = arrivals[i] if i < n_arr else math.inf
                if kind == DECODE:  # the decode iteration under way ends at t (:meth:`end_decode`)
                    if last is None:  # (else every running sequence got its previous token at last: the
                        for t_last, count in groups.items():  # gap of this row, RequestState.itl)
                            itl_value(t - t_last)
                            itl_weight(count)
                        run_lo = d_rows
                    finished = D in finish_at and finish_at.pop(D)  # (most steps finish no one)
                    D += 1
                    if finished:
                        step = D - 1
                        for r in finished:
                            if finish_step[r] != step or state[r] != DECODING:
                                continue
                            b = kv_base[r]
                            free += -(-(b + D) // BLOCK_TOKENS)
                            n -= 1
                            S -= b
                            phase[b % BLOCK_TOKENS] -= 1
                            finish_step[r] = -1
                            done[r] = gen[r]
                            finish[r] = t
                            last_tok[r] = t
                            state[r] = DONE
                            load -= 1
                    last = t
                elif kind == PREFILL:  # its prompts got their token at t (:meth:`after_prefill`)
                    if last is not None:  # (the decode ends so far: one group)
                        groups = {last: n} if n else {}
                        self.last_decode_end = last
                        last = None
                        if d_rows > run_lo:
                            itl_run((len(itl_values), rec_id, run_lo, d_rows))
                    joined = 0
                    for r in pending:
                        k = done[r]
                        kv_len = prompt[r] + k
                        if k:  # a recomputed cache: its next token (:meth:`produce`)
                            itl_value(t - last_tok[r])
                            itl_weight(1)
                        else:  # the first token (none generated yet)
                            first[r] = t
                        last_tok[r] = t
                        k += 1
                        done[r] = k
                        if gen[r] - k <= 0:
                            finish[r] = t
                            state[r] = DONE
                            free += -(-kv_len // BLOCK_TOKENS)
                            load -= 1
                            continue
                        b = kv_len - D  # (:meth:`join`)
                        kv_base[r] = b
                        join_step[r] = D
                        step = D + gen[r] - k - 1
                        finish_step[r] = step
                        lst = finish_at.get(step)
                        if lst is None:
                            finish_at[step] = [r]
                        else:
                            lst.append(r)
                        state[r] = DECODING
                        S += b
                        phase[b % BLOCK_TOKENS] += 1
                        joined += 1
                    if joined:
                        n += joined
                        groups[t] = groups.get(t, 0) + joined
                    pending = ()
                # the next iteration starts at t (each start goes on to the next end; none: :meth:`begin`)
                if waiting and n < most:
                    if admits:  # shipped caches join FCFS while blocks allow (DecodeInstance)
                        if last is not None:  # (the decode ends so far: one group)
                            groups = {last: n} if n else {}
                            self.last_decode_end = last
                            last = None
                            if d_rows > run_lo:
                                itl_run((len(itl_values), rec_id, run_lo, d_rows))
                        k = self.admissions
                        while waiting and n < most:
                            r = waiting[0]
                            kv_len = prompt[r] + done[r] - 1  # (the latest token is not in the cache yet)
                            need = -(-kv_len // BLOCK_TOKENS)
                            if free - need < mark and not (free == total and need <= free):  # (:meth:`take_blocks`)
                                break
                            free -= need
                            waiting.popleft()
                            k += 1  # (:meth:`push`, :meth:`join`)
                            admit[r] = k
                            stack(r)
                            stack_ids(k)
                            b = kv_len - D
                            kv_base[r] = b
                            join_step[r] = D
                            step = D + gen[r] - done[r] - 1
                            finish_step[r] = step
                            lst = finish_at.get(step)
                            if lst is None:
                                finish_at[step] = [r]
                            else:
                                lst.append(r)
                            state[r] = DECODING
                            n += 1
                            S += b
                            phase[b % BLOCK_TOKENS] += 1
                            t_last = last_tok[r]
                            groups[t_last] = groups.get(t_last, 0) + 1
                        self.admissions = k
                        base = None  # (its decode priced as :meth:`begin` prices it)
                    elif not prefills:
                        kind = None
                        break  # (admitted by :meth:`begin`)
                    else:
                        # admit waiting prompts FCFS while tokens, sequences and blocks allow
                        k = first_id = self.admissions  # (admission ids: :meth:`push`)
                        room = first_id + most - n
                        admitted = []
                        tokens = 0
                        pairs = 0.0
                        while waiting and k < room:
                            r = waiting[0]
                            kv_len = prompt[r] + done[r]
                            if k > first_id and tokens + kv_len > limit_tokens:
                                break
                            need = -(-kv_len // BLOCK_TOKENS)
                            if free - need < mark and not (free == total and need <= free):  # (:meth:`take_blocks`)
                                break
                            free -= need
                            waiting.popleft()
                            admitted.append(r)
                            tokens += kv_len
                            pairs += kv_len * (kv_len + 1.0) / 2.0
                            k += 1
                            admit[r] = k
                            stack(r)
                            stack_ids(k)
                            state[r] = PREFILLING
                        if k > first_id:
                            self.admissions = k
                            m = k - first_id
                            # (:meth:`~perfsim.events.serving.iteration_cost.IterationCost.price_pairs`; a
                            # prompt alone: its pairs follow from its tokens, kept by them; a mix's seldom recur)
                            if m == 1:
                                known = singles.get(tokens)
                                if known is None:
                                    known = singles[tokens] = price_pairs(tokens, 1, pairs)
                            else:
                                known = price_pairs(tokens, m, pairs)
                            equivalent, dur, over = known
                            if over:
                                cost.over_cap += over
                            if p_rows == p_room:
                                p_room, (pre_start, pre_dur, pre_tokens, pre_prompts, pre_prompt, pre_used,
                                         pre_running) = self.rec.grow(1)
                            pre_start[p_rows] = t
                            pre_dur[p_rows] = dur
                            pre_tokens[p_rows] = tokens
                            pre_prompts[p_rows] = m
                            pre_prompt[p_rows] = equivalent
                            pre_used[p_rows] = total - free
                            pre_running[p_rows] = n + m
                            p_rows += 1
                            busy += dur
                            kind, pending = PREFILL, admitted
                            end = t + dur
                            if not end < horizon:
                                break
                            t = end
                            continue
                if steady and n:  # a decode iteration of the same batch (:meth:`start_decode`)
                    need = phase[-D % BLOCK_TOKENS]
                    if need <= free:
                        free -= need
                        context = (S + n * D) / n + 1.0
                        if base is None:  # (each priced on its own; or as begin prices it, after caches joined)
                            dur = decode_step(n, context)
                            base = lookup[0]
                        else:
                            if not lo <= context < hi:  # (the context axis's cell, kept while it holds)
                                j, lo, hi, x0, dx = axis.cell(context)
                            w = (context - x0) / dx
                            k = j + n * width
                            dur = base[n] + (table[k] + w * slope[k])
                            if clear is not None and not (clear[k] and 0.0 <= w <= 1.0 and dur):
                                dur = decode_step(n, context)  # (the power cap may slow it)
                        if d_rows == d_room:
                            d_room, (row_start, row_dur, row_seqs, row_context, row_used) = self.rec.grow(0)
                        row_start[d_rows] = t
                        row_dur[d_rows] = dur
                        row_seqs[d_rows] = n
                        row_context[d_rows] = context
                        row_used[d_rows] = total - free
                        d_rows += 1
                        busy += dur
                        kind = DECODE
                        end = t + dur
                        if not end < horizon:
                            break
                        t = end
                        continue
                kind = None
                break  # (started by :meth:`begin`)
            if last is not None:
                groups = {last: n} if n else {}
                self.last_decode_end = last
                ended = d_rows - 1 if kind == DECODE else d_rows  # (a decode under way: its end comes on entry)
                if ended > run_lo:
                    itl_run((len(itl_values), rec_id, run_lo, ended))
            self.D, self.n_run, self.S, self.free, self.load, self.groups, self.busy_s, self.pending = \
                D, n, S, free, load, groups, busy, pending
            self.cell = (j, lo, hi, x0, dx)
            filled[0], filled[1] = d_rows, p_rows
            if kind is not None:  # (it ends at the horizon or after)
                self.kind = kind
                if kind == DECODE:
                    self.n_dec, self.pieces = n, ()
                return t, dur, i
            dur = self.begin(t)
            if dur is None:
                return t, None, i
            self.busy_s += dur
            if self.out or not t + dur < horizon:
                return t, dur, i
            kind = self.kind
            t += dur

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
        if self.produce(r, t) <= 0:
            req.finish[r] = t
            req.state[r] = DONE
            self.free += blocks_for(kv_len)
            self.load -= 1
        else:
            self.join(r, kv_len, t)
