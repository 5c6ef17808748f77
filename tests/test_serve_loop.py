"""The serving loop's shortcuts change nothing: back-to-back iterations run in one loop give what
the event loop gives one event at a time; kept lookups and prefill costs are what a fresh search
or pricing gives."""

import gc
from bisect import bisect_right

import numpy as np
import pytest

import perfsim
from perfsim.events.serving import iteration_cost
from perfsim.events.serving import scenario as serving_scenario
from perfsim.events.serving.axes import Axis, context_grid, token_grid
from perfsim.events.serving.batching import Batching
from perfsim.events.serving.iteration_cost import IterationCost
from perfsim.events.serving.metrics import stable_order
from perfsim.events.serving.schedulers import ChunkedInstance, ContinuousInstance, DecodeInstance
from perfsim.events.serving.state import DECODE, MIXED, PREFILL, Records, RequestState
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

SMALL = dict(model="llama2-7b", hardware="a100-80gb")
LENGTHS = dict(prompt_len={"dist": "lognormal", "mean": 1024, "sigma": 0.5, "max": 4096},
               gen_len={"dist": "lognormal", "mean": 128, "sigma": 0.6, "max": 512})


def _same(a, b):
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


BIG = dict(model="llama2-70b", hardware="h100-sxm", tp=8)  # decode iterations need no clock solve here


@pytest.mark.parametrize("scenario", [
    dict(BIG, num_requests=300, arrival_rate=12.0, gpu_memory_utilization=0.22, **LENGTHS),  # preemptions
    dict(BIG, num_requests=300, max_batch=16, **LENGTHS),  # all at t = 0: the batch full, requests waiting
    dict(BIG, num_requests=200, arrival_rate=12.0, scheduler="chunked-prefill", chunk_size=512, **LENGTHS),
    dict(BIG, num_requests=200, arrival_rate=20.0, disaggregate="8:8", gpu_memory_utilization=0.22, **LENGTHS),
    dict(SMALL, num_requests=200, arrival_rate=12.0, disaggregate="1:1", gpu_memory_utilization=0.22, gen_len=200,
         prompt_len=LENGTHS["prompt_len"]),  # caches arrive while the decode instance runs; preemptions
    dict(SMALL, num_requests=200, arrival_rate=10.0, dp=2, num_devices=2, power_cap_w=250, **LENGTHS),
    dict(SMALL, num_requests=200, arrival_rate=10.0, power_cap_w=300, **LENGTHS),  # some decodes clear of it
], ids=["continuous", "offline", "chunked", "disaggregated", "disaggregated-busy", "replicas-capped", "capped"])
def test_the_loop_gives_what_the_event_loop_gives(scenario, monkeypatch):
    looked_up, sims, begun = [], [], []
    lookup, simulate = IterationCost.decode_lookup, serving_scenario.simulate
    monkeypatch.setattr(IterationCost, "decode_lookup", lambda self: looked_up.append(lookup(self)) or looked_up[-1])
    monkeypatch.setattr(serving_scenario, "simulate", lambda *a, **k: sims.append(simulate(*a, **k)) or sims[-1])
    for kind in (ContinuousInstance, ChunkedInstance, DecodeInstance):  # (the loop's instances)
        monkeypatch.setattr(kind, "begin", lambda self, t, begin=kind.begin: begun.append(t) or begin(self, t))
    fast = perfsim.serve(**scenario)
    # the loop takes the steps (a decode instance admits shipped caches in it too): begin runs where an
    # instance starts idle or a step preempts
    assert len(begun) < fast["breakdown"]["iterations"] / 5
    assert looked_up and fast["completed"] == scenario["num_requests"]
    # decode iterations run in the loop, read from the tables; where the cap may slow them (clear: the
    # entries that surely stay within it) the others are priced one by one as the event loop prices them
    assert (looked_up[0][4] is not None) == ("power_cap_w" in scenario) or scenario["hardware"] != BIG["hardware"]
    monkeypatch.setattr(Batching, "fast", False)  # every iteration end through the event queue
    slow = perfsim.serve(**scenario)
    _same(fast, slow)
    # every token gap in the same place (the loop's runs of decode iterations put in theirs: RequestState.itl)
    assert len(sims) == 2 and len(sims[0].itl_value_s) > 100
    for key in ("itl_value_s", "itl_weight"):
        assert getattr(sims[0], key).tobytes() == getattr(sims[1], key).tobytes()
    for (*_, rec, busy), (*_, slow_rec, slow_busy) in zip(sims[0].instances, sims[1].instances, strict=True):
        assert rec.tobytes() == slow_rec.tobytes() and busy == slow_busy


@pytest.mark.parametrize("scenario", [
    dict(BIG, num_requests=300, arrival_rate=12.0, gpu_memory_utilization=0.22, scheduler="chunked-prefill",
         chunk_size=512, **LENGTHS),  # preemptions
    dict(SMALL, num_requests=200, arrival_rate=10.0, power_cap_w=250, scheduler="chunked-prefill", **LENGTHS),
    dict(SMALL, num_requests=200, arrival_rate=14.0, dp=2, num_devices=2, scheduler="chunked-prefill", chunk_size=64,
         max_batch=96, **LENGTHS),  # two instances (each loop stops at the other's events); decodes fill the budget
], ids=["preempting", "capped", "replicas-small-chunks"])
def test_chunked_prefill_loop_takes_the_steps_of_begin_and_end(scenario, monkeypatch):
    """Chunked prefill's iterations run in its loop (chunked_loop.run: begin only where an instance starts idle or
    a step preempts), with the results, token gaps and records of begin and end taking one step at a time."""
    begun, capped, sims = [], [], []
    begin, capped_at, simulate = ChunkedInstance.begin, IterationCost._capped_at, serving_scenario.simulate
    monkeypatch.setattr(ChunkedInstance, "begin", lambda self, t: begun.append(t) or begin(self, t))
    monkeypatch.setattr(IterationCost, "_capped_at", lambda self, *a: capped.append(a) or capped_at(self, *a))
    monkeypatch.setattr(serving_scenario, "simulate", lambda *a, **k: sims.append(simulate(*a, **k)) or sims[-1])
    fast = perfsim.serve(**scenario)
    iterations = fast["breakdown"]["iterations"]
    assert fast["completed"] == scenario["num_requests"] and len(begun) < iterations / 10
    assert (fast["breakdown"]["preemptions"] > 0) == ("gpu_memory_utilization" in scenario)
    assert len(capped) > 100 or "power_cap_w" not in scenario  # (iterations the bound does not clear: a solve)
    monkeypatch.setattr(Batching, "fast", False)  # every iteration through begin and end
    begun.clear()
    slow = perfsim.serve(**scenario)
    assert len(begun) >= iterations  # (and where nothing was left to run)
    _same(fast, slow)
    for key in ("itl_value_s", "itl_weight", "first_token_s", "finish_s"):
        assert getattr(sims[0], key).tobytes() == getattr(sims[1], key).tobytes()
    for (*_, rec, busy), (*_, slow_rec, slow_busy) in zip(sims[0].instances, sims[1].instances, strict=True):
        assert rec.tobytes() == slow_rec.tobytes() and busy == slow_busy


def test_token_gaps_of_runs_of_decode_iterations_go_in_their_places():
    req = RequestState(np.zeros(2), np.ones(2, dtype=int), np.ones(2, dtype=int))
    one, two = Records(), Records()
    for rec, starts in ((one, (0.0, 0.1, 0.3, 0.7)), (two, (5.0, 5.5, 6.5))):
        rec.grow(0)
        for k, start in enumerate(starts):
            rec.decode[0][k], rec.decode[2][k] = start, 10.0 * (k + 1) + (rec is two)
        for k in range(len(starts) - 1):
            rec.decode[1][k] = starts[k + 1] - start
    req.itl_value.extend((9.0, 8.0, 7.0))
    req.itl_weight.extend((1.0, 2.0, 3.0))
    # (position among the gaps appended one by one, records, first row, row past the last)
    req.itl_runs.extend((0, id(two), 1, 2, 0, id(one), 0, 2, 2, id(one), 2, 3, 3, id(two), 0, 1))
    values, weights = req.itl([one, two])

    def gap(rec, k):
        return (rec.decode[0][k] + rec.decode[1][k]) - rec.decode[0][k]

    assert values.tolist() == [gap(two, 1), gap(one, 0), gap(one, 1), 9.0, 8.0, gap(one, 2), 7.0, gap(two, 0)]
    assert weights.tolist() == [21.0, 10.0, 20.0, 1.0, 2.0, 30.0, 3.0, 11.0]
    req.itl_runs = type(req.itl_runs)("q")  # none: the gaps appended
    assert [a.tolist() for a in req.itl([one])] == [[9.0, 8.0, 7.0], [1.0, 2.0, 3.0]]


def test_decode_entries_marked_clear_are_those_the_power_check_clears():
    c = build(expand({**SMALL, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1, "power_cap_w": 300}))
    cost = IterationCost(c, max_tokens=4096, max_seqs=24, max_context=4097)
    base, table, slope, width, clear = cost.decode_lookup()
    clear = np.array(clear).reshape(-1, width)
    assert 0 < clear.sum() < clear.size  # both kinds at 300 W
    jp, wp = cost._no_prompt
    for n in range(len(clear)):
        jt, wt = cost.tokens.locate(n)
        for j in range(width - 1):
            for w in (0.0, 0.5, 1.0):  # an iteration read anywhere in the entry's cell
                assert clear[n, j] == cost._below_cap((jt, wt, n, n * width + j, w, jp, wp))
    # where it holds, an iteration's length is the table's (no clock solve)
    lengths = []
    for n, context in ((1, 10.0), (2, 3000.5), (8, 3000.5), (24, 4096.0), (3, 1.0)):
        j, w = cost.context.locate(context)
        if clear[n, j]:
            lengths.append(cost.decode_step_s(n, context))
            assert lengths[-1] == base[n] + (table[n * width + j] + w * slope[n * width + j])
    assert lengths


def test_a_decode_priced_alone_skips_the_power_check_only_where_its_entry_is_clear(monkeypatch):
    c = build(expand({**SMALL, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1, "power_cap_w": 300}))
    cost = IterationCost(c, max_tokens=4096, max_seqs=24, max_context=4097)
    assert not cost._decode_free
    checked, full = [], cost._capped_at
    monkeypatch.setattr(cost, "_capped_at", lambda *a: checked.append(a) or full(*a))
    rng = np.random.default_rng(7)
    for n, context in zip(rng.integers(1, 25, 600).tolist(), rng.uniform(1.0, 4096.0, 600).tolist(), strict=True):
        j, w = cost.context.locate(context)
        j += n * cost.context.size
        t = cost._base[n] + (cost._decode_time[j] + w * (cost._decode_time[j + 1] - cost._decode_time[j]))
        at = (*cost.tokens.locate(n), n, j, w, *cost._no_prompt)
        calls = len(checked)
        assert cost.decode_step_s(n, context) == full(t, at, n, 0.0)  # (what the full check gives)
        assert (len(checked) == calls) == cost._below_cap(at)  # (skipped where the entry bound clears it)
    assert 0 < len(checked) < 600


def test_iterations_surely_within_the_cap_get_what_the_clock_solve_gives_them():
    c = build(expand({**BIG, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1}))
    cost = IterationCost(c, max_tokens=8192, max_seqs=64, max_context=4097)
    rng = np.random.default_rng(5)
    n = rng.integers(1, 60, 3000)
    kind = rng.integers(0, 3, 3000)  # decodes alone, prefills, mixed
    n_dec = np.where(kind == 1, 0, n)
    n_pre = np.where(kind == 0, 0, rng.integers(1, 4, 3000))
    tokens = np.where(kind == 0, n, n_dec + rng.integers(1, 4000, 3000))
    rows = (tokens.astype(float), n_dec + n_pre, n_dec, np.where(n_dec > 0, rng.uniform(1.0, 4096.0, 3000), 0.0),
            n_pre, np.where(n_pre > 0, rng.uniform(1.0, 2000.0, 3000), 0.0))
    assert cost._within_cap(*(np.asarray(x) for x in rows))  # (the board's limit: no iteration reaches it)
    for time in (True, False):
        plain, solved = cost.work(*rows, time=time), cost._work(*np.broadcast_arrays(*rows), time, False)
        assert list(plain) == list(solved) and np.all(solved["clock_ratio"] == 1.0)
        for key in plain:
            assert plain[key].tobytes() == solved[key].tobytes(), key
    cost.cap = 500.0  # where some iterations pass the limit, the solve runs
    capped = cost.work(*rows)
    assert np.any(capped["clock_ratio"] < 1.0) and np.all(capped["time_s"] >= capped["full_s"])
    # the device's wait (host time not hidden, launch gaps), with or without a limit and the iterations' lengths
    seqs = (n_dec + n_pre).astype(float)
    assert capped["gap_s"].tobytes() == (cost.host_s(seqs, capped["launch_s"]) - capped["hidden_s"]).tobytes()
    cost.cap = None
    bare = cost.work(*rows, time=False)
    assert "time_s" not in bare and bare["gap_s"].tobytes() == cost.host_s(seqs, bare["launch_s"]).tobytes()


def test_the_decode_lookup_is_made_once(monkeypatch):
    """The loop asks for its decode tables each time it starts (at every event reaching an instance of a
    disaggregated or replicated run); with host time under the kernels they take a pass over the tables to make."""
    made, base = [], iteration_cost.hidden_decode_base
    monkeypatch.setattr(iteration_cost, "hidden_decode_base", lambda *a: made.append(a) or base(*a))
    result = perfsim.serve(**SMALL, num_requests=100, arrival_rate=12.0, dp=2, num_devices=2, runtime="vllm", **LENGTHS)
    assert result["completed"] == 100 and len(made) == 1


def test_an_axis_locates_as_bisection_does():
    for grid in (token_grid(20000), token_grid(300), token_grid(5000, integer_up_to=64, growth=1.02),
                 context_grid(5000), np.array([0.0, 1.0]), np.array([0.0, 2.0, 3.0]), np.array([1.0, 2.0])):
        axis = Axis(grid)
        xs = axis.list
        for x in [*np.linspace(-3.0, xs[-1] + 3.0, 2001).tolist(), *range(-2, int(xs[-1]) + 3)]:
            j = min(max(bisect_right(xs, x) - 1, 0), axis.last)
            assert axis.locate(x) == (j, (x - xs[j]) / (xs[j + 1] - xs[j]))
            k, lo, hi, x0, dx = axis.cell(x)
            assert k == j and lo <= x < hi and (x0, dx) == (xs[j], xs[j + 1] - xs[j])
        # arrays: as each number alone, within the integer head or not
        for x in (np.linspace(-3.0, xs[-1] + 3.0, 2001), np.arange(0.0, axis.unit, 0.25), np.array([0.5])):
            j, w = axis.locate(x)
            assert [(int(a), float(b)) for a, b in zip(j, w, strict=True)] == [axis.locate(v) for v in x.tolist()]


def test_a_prefill_cost_is_kept_and_every_iteration_over_the_cap_counted():
    c = build(expand({**SMALL, "mode": "inference", "batch": 1, "prompt_len": 1, "gen_len": 1}))
    cost = IterationCost(c, max_tokens=4096, max_seqs=8, max_context=4097)
    fresh = IterationCost(c, max_tokens=4096, max_seqs=8, max_context=4097)
    assert cost.prefill_step_s(1000, 1, 1000.0) == cost.prefill_step_s(1000, 1, 1000.0) \
        == fresh._prefill_step_s(1000, 1, 1000.0)
    assert cost.over_cap == 0
    cost.cap = fresh.cap = 1.0  # no clock meets one watt
    assert cost.prefill_step_s(2000, 2, 999.5) == cost.prefill_step_s(2000, 2, 999.5) \
        == fresh._prefill_step_s(2000, 2, 999.5)
    assert cost.over_cap == 2 and fresh.over_cap == 1
    # by query-key pairs: the equivalent prompt, its price and whether it is over the cap (the caller counts it)
    pairs = 2 * 999.5 * 1000.5 / 2.0  # two prompts of 999.5 tokens' pairs
    assert cost.price_pairs(2000, 2, pairs) == (999.5, fresh._prefill_step_s(2000, 2, 999.5), 1)
    assert cost.over_cap == 2


def test_packed_iterations_come_back_as_the_rows_they_stand_for():
    rows = [(0.0, 0.5, PREFILL, 900, 2, 0, 0.0, 2, 450.25, 60, 2),
            (0.5, 0.25, DECODE, 2, 2, 2, 451.5, 0, 0.0, 60, 2),
            (0.75, 0.5, PREFILL, 300, 1, 0, 0.0, 1, 300.0, 80, 3),
            (1.25, 0.75, MIXED, 40, 3, 2, 452.0, 1, 38.5, 81, 3),
            (2.0, 0.25, DECODE, 3, 3, 3, 390.0, 0, 0.0, 81, 3)]
    packed = Records(rows=[rows[3]])
    # decode rows: start, length, sequences, context, blocks; prefill rows: start, length, tokens, prompts, prompt,
    # blocks, running (written through the views, as the loops write them)
    for part, (kept, at) in enumerate((((rows[1], rows[4]), (0, 1, 3, 6, 9)),
                                       ((rows[0], rows[2]), (0, 1, 3, 4, 8, 9, 10)))):
        _, views = packed.grow(part)
        for k, row in enumerate(kept):
            for view, c in zip(views, at, strict=True):
                view[k] = row[c]
    packed.filled[:] = [2, 2]
    assert packed.array().tolist() == Records(rows=rows).array().tolist() == [list(map(float, r)) for r in rows]
    size, views = packed.grow(0)  # more room: the rows written stay, room beyond them is not read
    assert size == len(views[0]) == len(packed.decode[0]) > 4096 and views[0][0] == 0.5
    assert packed.array().tolist() == [list(map(float, r)) for r in rows]


def test_token_gaps_sort_as_the_stable_sort_of_the_values():
    rng = np.random.default_rng(3)
    gaps = np.round(rng.exponential(0.02, 4000), 4)  # many ties
    gaps[:5] = (0.0, 0.0, np.inf, 1e-300, 5e-324)
    for values in (gaps, np.append(gaps, -0.0), np.append(gaps, -1e-3), np.append(gaps, np.nan), gaps[:1],
                   gaps[::-1].copy(), np.zeros(0)):
        assert stable_order(values).tolist() == np.argsort(values, kind="stable").tolist()


@pytest.mark.parametrize("scenario", [
    dict(BIG, num_requests=200, arrival_rate=12.0, gpu_memory_utilization=0.22, **LENGTHS),  # preemptions
    dict(BIG, num_requests=100, arrival_rate=20.0, disaggregate="8:8", gpu_memory_utilization=0.22, **LENGTHS),
    dict(model="qwen3-30b-a3b", hardware="h100-sxm", num_devices=2, tp=1, dp=2, ep=2, runtime="trt-llm",
         num_requests=60, arrival_rate=8.0, **LENGTHS),  # a lock-stepped expert group
], ids=["continuous", "disaggregated", "dep"])
def test_a_run_leaves_no_reference_cycles(scenario, monkeypatch):
    """What a simulation made is freed when it returns (none of it waits for the cycle collector)."""
    found = []
    simulate = serving_scenario.simulate

    def counted(*args, **kwargs):
        gc.collect()
        sim = simulate(*args, **kwargs)
        found.append(gc.collect())
        return sim

    monkeypatch.setattr(serving_scenario, "simulate", counted)
    assert perfsim.serve(**scenario)["completed"] and found == [0]
