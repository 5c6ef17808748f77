"""Chunked prefill's iterations run back to back in one loop (:func:`run`).

:class:`~perfsim.events.serving.schedulers.ChunkedInstance` takes one step at a time through its
``begin`` and ``end`` (the reference the loop is checked against); :func:`run` takes the same steps in
the same order on the batch's aggregates held in local variables: the end of the iteration under way
(its decodes' tokens, :meth:`~perfsim.events.serving.batching.Batching.end_decode`, then its prompt
chunks, the prompts they complete producing their token and joining the batch), and the start of the
next (a decode iteration of the running batch read from the tables where
:meth:`~perfsim.events.serving.batching.Batching.run` reads it, else the decodes and chunks of
``begin``). A step that would preempt a sequence goes through ``begin``.
"""

from __future__ import annotations

import math

from perfsim.cost.host import hidden_host
from perfsim.events.serving.iteration_cost import equivalent_prompt
from perfsim.events.serving.state import BLOCK_TOKENS, DECODE, DECODING, DONE, MIXED, PREFILL, PREFILLING

PREEMPT = "preempt"  # (the next iteration preempts a sequence: ChunkedInstance.begin starts it)


def run(inst, t, horizon, arrivals=None, i=0):
    """:meth:`~perfsim.events.serving.batching.Batching.run` of a chunked-prefill instance ``inst``: the
    iteration under way ended at ``t``; apply it and start the next, and so on while each ends before
    ``horizon``; returns the start and length of the iteration under way (None: nothing to run) and
    ``i`` (with ``arrivals``, the requests from ``i`` on arrive at the instance as their time comes)."""
    req, rec, cost = inst.req, inst.rec, inst.cost
    finish_step, state, kv_base, done, gen, prompt, first, last_tok, finish, admit, join_step, prefilled = (
        req.finish_step, req.state, req.kv_base, req.done, req.gen, req.prompt, req.first, req.last_tok, req.finish,
        req.admit, req.join_step, req.prefilled)
    itl_value, itl_weight = req.itl_value.append, req.itl_weight.append
    row_start, row_dur, row_seqs, row_context, row_used = rec.views[0]
    rows, filled = rec.rows.append, rec.filled
    d_rows, d_room = filled[0], len(row_start)
    phase, finish_at, prefilling, waiting = inst.phase, inst.finish_at, inst.prefilling, inst.waiting
    stack, stack_ids = inst.stack.append, inst.stack_ids.append
    total, mark, most, chunk = inst.total_blocks, inst.watermark, inst.cfg.max_batch, inst.cfg.chunk_size
    base, table, slope, width, clear = cost.decode_lookup()
    decode_step, axis = cost.decode_step_s, cost.context
    # (:meth:`~perfsim.events.serving.iteration_cost.IterationCost.mixed_step_s`, read here)
    (linear, head, decode, prefill), (overhead, per_seq, overlap), (t_axis, _, p_axis), \
        ((jc0, wc0), (jp0, wp0)), capping = cost.mixed_lookup()
    t_locate, t_unit, txs, p_cell, c_size, p_size = t_axis.locate, t_axis.unit, t_axis.list, p_axis.cell, \
        axis.size, p_axis.size
    bound, limit, capped = capping if capping is not None else (None, None, None)
    pj, plo, phi, px0, pdx = p_cell(0.0)
    n_arr = len(arrivals) if arrivals is not None else 0
    t_arr = arrivals[i] if i < n_arr else math.inf
    n_dec, pieces = inst.n_dec, inst.pieces  # (the iteration under way)
    while True:
        D, n, S, free, load, groups, busy, admissions, last_end = (
            inst.D, inst.n_run, inst.S, inst.free, inst.load, inst.groups, inst.busy_s, inst.admissions,
            inst.last_decode_end)
        j, lo, hi, x0, dx = inst.cell
        while True:
            if t >= t_arr:
                while t_arr <= t:  # (:meth:`enqueue`)
                    waiting.append(i)
                    load += 1
                    i += 1
                    t_arr = arrivals[i] if i < n_arr else math.inf
            # the iteration under way ends at t (ChunkedInstance.end): its decodes (:meth:`end_decode`) ...
            if n_dec:
                for t_prev, count in groups.items():
                    itl_value(t - t_prev)
                    itl_weight(count)
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
                groups = {t: n} if n else {}
                last_end = t
            # ... then its prompt chunks: a prompt they complete gets its token (:meth:`after_prefill`)
            for r, q in pieces:
                cached = prefilled[r] + q
                prefilled[r] = cached
                target = prompt[r] + done[r]
                if cached < target:
                    continue
                prefilling.remove(r)
                if first[r] != first[r]:  # (:meth:`produce`; nan: the first token)
                    first[r] = t
                else:
                    itl_value(t - last_tok[r])
                    itl_weight(1)
                last_tok[r] = t
                k = done[r] + 1
                done[r] = k
                if gen[r] - k <= 0:
                    finish[r] = t
                    state[r] = DONE
                    free += -(-target // BLOCK_TOKENS)
                    load -= 1
                    continue
                b = target - D  # (:meth:`join`)
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
                n += 1
                S += b
                phase[b % BLOCK_TOKENS] += 1
                groups[t] = groups.get(t, 0) + 1
            # the next iteration starts at t
            need = phase[-D % BLOCK_TOKENS]
            if n and need > free:
                kind = dur = PREEMPT
                break  # (it preempts: ChunkedInstance.begin)
            if n and not prefilling and not (waiting and n < most):
                # the running batch decodes alone, read from the tables (as Batching.run reads it)
                free -= need
                context = (S + n * D) / n + 1.0
                if base is None:  # (each priced on its own)
                    dur = decode_step(n, context)
                else:
                    if not lo <= context < hi:  # (the context axis's cell, kept while it holds)
                        j, lo, hi, x0, dx = axis.cell(context)
                    w = (context - x0) / dx
                    k = j + n * width
                    dur = base[n] + (table[k] + w * slope[k])
                    if clear is not None and not (clear[k] and 0.0 <= w <= 1.0 and dur):
                        dur = decode_step(n, context)  # (the power cap may slow it)
                if d_rows == d_room:
                    d_room, (row_start, row_dur, row_seqs, row_context, row_used) = rec.grow(0)
                row_start[d_rows] = t
                row_dur[d_rows] = dur
                row_seqs[d_rows] = n
                row_context[d_rows] = context
                row_used[d_rows] = total - free
                d_rows += 1
                n_dec, pieces, kind = n, (), DECODE
            else:  # the running decodes, then chunks of prompts fill the token budget (ChunkedInstance.begin)
                if n:
                    free -= need
                    context = (S + n * D) / n + 1.0
                else:
                    context = 0.0
                n_dec = n
                budget = chunk - n
                pieces = []
                tokens = n
                pairs = 0.0
                completing = 0
                for r in prefilling:
                    if budget <= 0:
                        break
                    target = prompt[r] + done[r]
                    cached = prefilled[r]
                    q = target - cached  # (min(q, budget), without the call's argument parsing)
                    if budget < q:
                        q = budget
                    pieces.append((r, q))
                    budget -= q
                    tokens += q
                    pairs += q * (2.0 * cached + q + 1.0) / 2.0  # (chunk_pairs)
                    completing += cached + q == target
                while budget > 0 and waiting and n + len(prefilling) < most:
                    r = waiting[0]
                    target = prompt[r] + done[r]
                    need = -(-target // BLOCK_TOKENS)
                    if free - need < mark and not (free == total and need <= free):  # (:meth:`take_blocks`)
                        break
                    free -= need
                    waiting.popleft()
                    admissions += 1  # (:meth:`push`)
                    admit[r] = admissions
                    stack(r)
                    stack_ids(admissions)
                    state[r] = PREFILLING
                    prefilled[r] = 0
                    prefilling.append(r)
                    q = target if not budget < target else budget
                    pieces.append((r, q))
                    budget -= q
                    tokens += q
                    pairs += q * (q + 1.0) / 2.0  # (chunk_pairs, nothing cached)
                    completing += q == target
                n_pre = len(pieces)
                if n_pre:
                    equivalent = equivalent_prompt(pairs / n_pre)
                    # (mixed_step_s: its token terms, LM head, decode and prefill attention, host time)
                    logits, seqs = n + completing, n + n_pre
                    if 0 <= tokens < t_unit:
                        jt, wt = tokens, (tokens - txs[tokens]) / (txs[tokens + 1] - txs[tokens])
                    else:
                        jt, wt = t_locate(tokens)
                    x = overhead + per_seq * seqs + (linear[jt] + wt * (linear[jt + 1] - linear[jt])) + head[logits]
                    if n:
                        if not lo <= context < hi:
                            j, lo, hi, x0, dx = axis.cell(context)
                        jc, wc = j + n * c_size, (context - x0) / dx
                        x += decode[jc] + wc * (decode[jc + 1] - decode[jc])
                    else:
                        jc, wc = jc0, wc0
                    if not plo <= equivalent < phi:
                        pj, plo, phi, px0, pdx = p_cell(equivalent)
                    jp, wp = pj + n_pre * p_size, (equivalent - px0) / pdx
                    x += prefill[jp] + wp * (prefill[jp + 1] - prefill[jp])
                    x -= (hidden := hidden_host(x, overhead + per_seq * seqs, overlap))
                    if capping is None:
                        dur = x
                    elif bound is not None and x and 0.0 <= wt <= 1.0 and 0.0 <= wc <= 1.0 and 0.0 <= wp <= 1.0 \
                            and max(bound[0][jt], bound[1][logits], bound[2][jc], bound[3][jp]) <= limit:
                        dur = x  # (surely within the limit: _capped_at's first check)
                    else:
                        dur = capped(x, (jt, wt, logits, jc, wc, jp, wp), seqs, hidden)
                    kind = MIXED if n else PREFILL
                elif n:  # decodes alone
                    equivalent = 0.0
                    dur = decode_step(n, context)
                    kind = DECODE
                else:  # nothing to run
                    kind = dur = None
                    break
                rows((t, dur, kind, tokens, n + completing, n, context, n_pre, equivalent, total - free,
                      n + len(prefilling)))
            busy += dur
            end = t + dur
            if not end < horizon:
                break
            t = end
        inst.D, inst.n_run, inst.S, inst.free, inst.load, inst.groups, inst.busy_s, inst.admissions, \
            inst.last_decode_end = D, n, S, free, load, groups, busy, admissions, last_end
        inst.cell = (j, lo, hi, x0, dx)
        filled[0] = d_rows
        if kind is None:  # (nothing to run)
            return t, None, i
        if kind is not PREEMPT:  # (the iteration under way ends at the horizon or after)
            inst.n_dec, inst.pieces, inst.kind = n_dec, pieces, kind
            return t, dur, i
        dur = inst.begin(t)
        if dur is None:
            return t, None, i
        inst.busy_s += dur
        if inst.out or not t + dur < horizon:
            return t, dur, i
        n_dec, pieces = inst.n_dec, inst.pieces
        t += dur
