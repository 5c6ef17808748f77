"""Discrete-event engine and training-step timelines: dependencies, exclusivity, determinism,
agreement with the closed form on equal stages, uneven end stages, data-parallel overlap, traces."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import perfsim
from perfsim.analytical.training import _pipeline
from perfsim.cli import cli
from perfsim.events.engine import Engine, EventQueue
from perfsim.events.pipeline import StageCosts, simulate

# a model whose embedding and LM head are negligible (vocabulary of 256): equal stages; tp=4
# keeps a pipeline of up to 4 stages in one node, its hand-offs on the scale-up fabric
EVEN = dict(hidden_size=8192, num_hidden_layers=32, num_attention_heads=64, num_key_value_heads=8,
            intermediate_size=28672, vocab_size=256, hidden_act="silu")
TRAIN = dict(hardware="h100-sxm", tp=4, seq_len=4096, recompute="full")


def _random_graph(seed, tasks=200, resources=5):
    rng = np.random.default_rng(seed)
    e = Engine()
    res = [e.resource(f"r{i}", policy="priority" if i % 2 else "fifo") for i in range(resources)]
    for i in range(tasks):
        deps = sorted(set(rng.integers(0, i, size=min(i, 3)).tolist())) if i else []
        lagged = [(int(rng.integers(0, i)), 0.3)] if i and rng.random() < 0.2 else []
        e.task(f"t{i}", res[int(rng.integers(0, resources))], float(rng.uniform(0.0, 2.0)), deps,
               after_start=lagged, priority=float(rng.integers(0, 3)))
    return e


def test_engine_respects_dependencies_and_exclusivity():
    e = _random_graph(1)
    r = e.run()
    for i in range(len(e.names)):
        for d in e.deps[i]:
            assert r.start_s[i] >= r.end_s[d] - 1e-12
        for d, lag in e.after_start[i]:
            assert r.start_s[i] >= r.start_s[d] + lag - 1e-12
    for res in range(len(e.labels)):
        mine = np.flatnonzero(np.asarray(e.resources) == res)
        order = mine[np.argsort(r.start_s[mine], kind="stable")]
        assert np.all(r.start_s[order[1:]] >= r.end_s[order[:-1]] - 1e-12)
        assert r.busy_s[res] == pytest.approx(sum(e.durations[i] for i in mine))
    assert r.makespan_s == pytest.approx(r.end_s.max())


def test_engine_is_deterministic():
    a, b = _random_graph(7).run(), _random_graph(7).run()
    assert np.array_equal(a.start_s, b.start_s) and np.array_equal(a.end_s, b.end_s)
    again = _random_graph(7)
    assert np.array_equal(again.run().start_s, again.run().start_s)


def test_event_queue_orders_by_time_then_push_order():
    q = EventQueue()
    assert q.peek_time() == np.inf and q.pop_due() == (np.inf, [])
    for time, kind, payload in ((2.0, 0, "a"), (1.0, 1, "b"), (2.0, 1, "c"), (1.0, 0, "d"), (2.0, 0, "e")):
        q.push(time, kind, payload)
    assert q.peek_time() == 1.0
    assert q.pop_due() == (1.0, [(1, "b"), (0, "d")])
    q.push(2.0, 1, "f")  # pushed later at a time already queued: after the others
    t, due = q.pop_due()
    assert t == 2.0 and [p for _, p in due] == ["a", "c", "e", "f"]
    q.push(2.0, 0, "g")  # at the time just handled: a later call
    assert q.pop_due() == (2.0, [(0, "g")]) and q.peek_time() == np.inf


def test_engine_small_dag_by_hand():
    # a(2) -> b(3, other resource) -> d(1); c(4) shares a's resource; e starts 1 s into c
    e = Engine()
    gpu, link = e.resource("gpu"), e.resource("link")
    a = e.task("a", gpu, 2.0)
    b = e.task("b", link, 3.0, [a])
    c = e.task("c", gpu, 4.0)
    e.task("d", gpu, 1.0, [b, c])
    e.task("e", link, 0.5, after_start=[(c, 1.0)])
    r = e.run()
    # gpu: a 0-2, c 2-6, d 6-7; link: b 2-5, e waits for the link until 5
    assert r.start_s.tolist() == [0.0, 2.0, 2.0, 6.0, 5.0]
    assert r.makespan_s == 7.0
    assert r.busy_s.tolist() == [7.0, 3.5]


def test_engine_priority_and_cycles():
    e = Engine()
    r0 = e.resource("r", policy="priority")
    for name, prio in (("low", 2.0), ("high", 0.0), ("mid", 1.0)):
        e.task(name, r0, 1.0, priority=prio)
    assert e.run().start_s.tolist() == [2.0, 0.0, 1.0]
    cyc = Engine()
    r1 = cyc.resource("r")
    x = cyc.task("x", r1, 1.0)
    y = cyc.task("y", r1, 1.0, [x])
    cyc.depend(x, [y])
    with pytest.raises(RuntimeError, match="never start"):
        cyc.run()


def _even(pp, v, F, B, W, R=0.0, handoff=0.0, opt=0.0):
    shape = (pp, v)
    return StageCosts(np.full(shape, F / v), np.full(shape, B / v), np.full(shape, W / v), np.full(shape, R / v),
                      handoff, np.zeros(pp), np.zeros(pp), np.full(pp, opt))


@pytest.mark.parametrize("schedule, code, vs", [("gpipe", 0, [1]), ("1f1b", 1, [1]), ("interleaved", 2, [1, 2, 4]),
                                                ("zero-bubble", 3, [1])])
def test_closed_form_bubbles_are_the_timelines(schedule, code, vs):
    """On equal stages without hand-off time the closed form's bubble is the timeline's, exactly:
    any number of micro-batches, recompute, and for ZB-H1 weight gradients cheaper or dearer
    than the forward."""
    for F, B, W, R in ((1.0, 2.1, 0.9, 0.0), (1.0, 2.0, 1.0, 1.0), (1.0, 1.5, 1.2, 0.0), (1.2, 4.0, 3.0, 0.0)):
        for pp in (2, 3, 4, 8):
            for v in vs:
                for n in (1, 2, pp - 1, pp, 2 * pp, 3 * pp + 1):
                    sim = simulate(_even(pp, v, F, B, W, R, opt=0.1), schedule, n)["step_time_s"]
                    t = {"forward_s": F, "backward_s": B, "wgrad_s": W, "recompute_s": R, "n_micro": n}
                    bubble, _ = _pipeline(t, {"pp": pp, "virtual_stages": v, "schedule": code})
                    assert sim == pytest.approx(n * (F + B + R) + bubble + 0.1, rel=1e-12), (pp, v, n, F, B, W)


CASES = [("gpipe", 4, 8, 1), ("gpipe", 2, 4, 1), ("1f1b", 2, 8, 1), ("1f1b", 4, 16, 1), ("1f1b", 4, 3, 1),
         ("interleaved", 4, 8, 2), ("interleaved", 4, 16, 4), ("interleaved", 2, 6, 2),
         ("zero-bubble", 4, 8, 1), ("zero-bubble", 2, 8, 1), ("zero-bubble", 4, 12, 1)]


@pytest.mark.parametrize("schedule, pp, n, v", CASES)
def test_timeline_matches_closed_form_on_even_stages(schedule, pp, n, v):
    r = perfsim.timeline(model=EVEN, **TRAIN, pp=pp, global_batch=n, schedule=schedule, virtual_stages=v,
                         stages="uniform")
    assert r["feasible"] and r["simulated"]
    assert r["step_time_s"] == pytest.approx(r["closed_form_step_time_s"], rel=0.01)
    b = r["breakdown"]
    assert sum(b.values()) == pytest.approx(r["step_time_s"], rel=1e-9)
    assert len(r["per_stage"]) == pp and b["idle_s"] >= 0.0


def test_end_stages_make_the_step_longer():
    kw = dict(model="llama2-7b", hardware="a100-80gb", tp=2, pp=4, global_batch=16)
    uniform, ends = perfsim.timeline(**kw, stages="uniform"), perfsim.timeline(**kw)
    assert ends["step_time_s"] > 1.02 * uniform["step_time_s"]
    # the last stage (LM head and loss) is the busiest, the middle ones hold only layers
    first, *middle, last = ends["per_stage"]
    assert last > first > middle[0] == pytest.approx(middle[-1])
    assert ends["step_time_s"] <= ends["closed_form_step_time_s"]  # the closed form charges every stage the head


@pytest.mark.parametrize("runtime, zero, schedule", [("megatron-2021", 0, "1f1b"), ("megatron-2021", 1, "interleaved"),
                                                     ("nemo", 0, "1f1b"), ("nemo", 1, "interleaved"),
                                                     ("deepspeed", 2, "1f1b"), ("torchtitan", 3, "zero-bubble")])
def test_data_parallel_overlap(runtime, zero, schedule):
    kw = dict(model="llama2-7b", hardware="h100-sxm", tp=2, pp=2, dp=8, global_batch=64, zero=zero, runtime=runtime,
              recompute="full", schedule=schedule, virtual_stages=2 if schedule == "interleaved" else 1)
    r = perfsim.timeline(**kw)
    closed = perfsim.estimate(**kw, mode="train")["breakdown"]["train"]
    unhidden = closed["dp_communication_s"]
    exposed = r["breakdown"]["dp_exposed_s"]
    assert unhidden > 0 and 0.0 <= exposed <= unhidden * (1 + 1e-9)
    if runtime == "megatron-2021":  # no overlap: the whole sync waits after the first stage's last backward
        assert exposed == pytest.approx(unhidden, rel=1e-4)  # its embedding is a little smaller than the LM head
    if runtime == "nemo":  # buckets leave during the last backward; the other stages' drain hides more
        assert exposed < unhidden and exposed <= closed["dp_exposed_s"] * (1 + 1e-9)


def test_trace_has_a_track_per_stream_and_a_slice_per_task(tmp_path):
    path = tmp_path / "step.json"
    pp, n = 4, 8
    r = perfsim.timeline(model="llama2-7b", hardware="a100-80gb", tp=2, pp=pp, dp=2, global_batch=2 * n,
                         trace_out=path)
    assert r["trace_out"] == str(path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    tracks = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    names = [e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    # per stage: compute and data-parallel streams; links both ways between neighbours
    assert len(tracks) == 2 * pp + 2 * (pp - 1)
    assert names.count("compute") == pp and names.count("data-parallel") == pp
    assert {(e["pid"], e["tid"]) for e in slices} == tracks
    buckets = 32 // pp  # one per layer of a stage
    assert len(slices) == 2 * pp * n + 2 * (pp - 1) * n + pp * buckets + pp
    assert {e["cat"] for e in slices} == {"compute", "handoff", "data_parallel", "optimizer"}
    last = max(e["ts"] + e["dur"] for e in slices) / 1e6
    assert last + 0.005 == pytest.approx(r["step_time_s"])  # plus megatron's per-step overhead


def test_timeline_edges():
    kw = dict(model="llama2-7b", hardware="a100-80gb", tp=2, pp=4)
    bad = perfsim.timeline(**kw, global_batch=15, dp=2)
    assert bad["feasible"] is False and "global_batch" in bad["reason"] and bad["step_time_s"] is None
    dual = perfsim.timeline(**kw, global_batch=16, schedule="dualpipe")
    assert dual["simulated"] is False and dual["step_time_s"] == dual["closed_form_step_time_s"]
    with pytest.raises(perfsim.InputError, match="mode"):
        perfsim.timeline(**kw, mode="inference")
    with pytest.raises(perfsim.InputError, match="stages"):
        perfsim.timeline(**kw, stages="even")
    with pytest.raises(perfsim.InputError, match="does not exist"):
        perfsim.timeline(**kw, trace_out="/nonexistent-dir/step.json")


def test_cli_trace_out(tmp_path):
    path = tmp_path / "step.json"
    base = ["estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--tp", "2", "--pp", "2",
            "--global-batch", "8"]
    plain = CliRunner().invoke(cli, [*base, "--mode", "train", "--format", "json"])
    result = CliRunner().invoke(cli, [*base, "--mode", "train", "--format", "json", "--trace-out", str(path)])
    assert result.exit_code == 0, result.output
    data, before = json.loads(result.output), json.loads(plain.output)
    assert data.pop("timeline")["trace_out"] == str(path) and data == before
    assert json.loads(path.read_text())["traceEvents"]
    table = CliRunner().invoke(cli, [*base, "--mode", "train", "--trace-out", str(path)])
    assert "timeline step" in table.output and str(path) in table.output
    for argv, needle in (([*base, "--mode", "train", "--trace-out", str(tmp_path / "no" / "s.json")], "does not exist"),
                         ([*base, "--trace-out", str(path)], "mode train"),
                         ([*base, "--mode", "train", "--trace-out", str(tmp_path)], "is a directory")):
        bad = CliRunner().invoke(cli, argv)
        assert bad.exit_code == 2 and needle in bad.output and "Traceback" not in bad.output
