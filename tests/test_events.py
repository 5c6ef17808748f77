"""Discrete-event engine: dependencies, exclusivity, determinism, a small graph by hand."""

import numpy as np
import pytest

from perfsim.events.engine import Engine


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
