"""A small discrete-event engine: tasks with dependencies on exclusive resources.

A *resource* (a compute stream, a copy engine, a link, a PIM unit) runs one task at a time; a
*task* has a name, a resource, a duration and dependencies. A task becomes ready when all its
dependencies are met: another task has finished, or (``after_start``) another task has been
running for a given time, which is how a gradient bucket is released part-way through a
backward pass. A free resource starts its ready tasks in order of readiness (``fifo``) or of
``priority`` (lowest first); ties go to the task added first, so a run is deterministic.

Durations are given, never computed here: they come from the same vectorised cost models as
the closed forms, and the engine only decides *when* each task runs. Events come out of an
:class:`EventQueue` (which the serving simulator uses too) by time and, at one time, in the order
they were pushed, as in SimPy's core (Müller and Vignaux); the state lives in flat lists, so a
graph of tens of thousands of tasks runs in a fraction of a second.

Examples
--------
>>> e = Engine()
>>> gpu, link = e.resource("gpu"), e.resource("link")
>>> a = e.task("a", gpu, 2.0)
>>> b = e.task("b", link, 1.0, deps=[a])
>>> c = e.task("c", gpu, 3.0)
>>> d = e.task("d", gpu, 1.0, deps=[b, c])
>>> r = e.run()
>>> r.makespan_s, r.start_s.tolist()
(6.0, [0.0, 2.0, 2.0, 5.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heappop, heappush
from math import inf

import numpy as np

_POLICIES = ("fifo", "priority")
_FINISH, _RELEASE = 0, 1


class EventQueue:
    """Events in time order, each a ``kind`` and a payload; events at the same time come out in the
    order they were pushed, so a run is deterministic and payloads are never compared.

    A heap of the distinct times and, per time, its events in a list.
    """

    __slots__ = ("_times", "_due")

    def __init__(self):
        self._times: list = []
        self._due: dict = {}

    def push(self, time, kind, payload=None):
        """Add an event of ``kind`` at ``time`` carrying ``payload``."""
        due = self._due
        if time in due:
            due[time].append((kind, payload))
        else:
            due[time] = [(kind, payload)]
            heappush(self._times, time)

    def peek_time(self):
        """Time of the next event; ``inf`` when there is none."""
        times = self._times
        return times[0] if times else inf

    def pop_due(self):
        """Remove the events at the time of the next one: ``(time, [(kind, payload), ...])``, in the
        order they were pushed (``(inf, [])`` when there is none). Events pushed at that time while
        these are handled come out in a later call."""
        if not self._times:
            return inf, []
        time = heappop(self._times)
        return time, self._due.pop(time)


@dataclass(frozen=True)
class Schedule:
    """What a run decided: per-task ``start_s`` / ``end_s`` (arrays in insertion order),
    ``makespan_s``, and ``busy_s`` per resource (array in the order resources were added)."""

    engine: Engine
    start_s: np.ndarray
    end_s: np.ndarray
    makespan_s: float
    busy_s: np.ndarray

    def slices(self) -> list[dict]:
        """One trace slice per task (for :func:`perfsim.events.trace.write_chrome_trace`);
        each resource is a track of its process."""
        e = self.engine
        out = []
        for i, name in enumerate(e.names):
            process, track = e.labels[e.resources[i]]
            s = {"process": process, "track": track, "name": name, "start_s": float(self.start_s[i]),
                 "dur_s": float(self.end_s[i] - self.start_s[i])}
            if e.args[i]:
                s["args"] = e.args[i]
            out.append(s)
        return out


class Engine:
    """Build a task graph with :meth:`resource` and :meth:`task`, then :meth:`run` it."""

    def __init__(self):
        self.labels: list[tuple[str, str]] = []  # (process, track) per resource
        self._policy: list[int] = []
        self.names: list[str] = []
        self.resources: list[int] = []
        self.durations: list[float] = []
        self.priorities: list[float] = []
        self.deps: list[tuple[int, ...]] = []
        self.after_start: list[tuple[tuple[int, float], ...]] = []
        self.args: list[dict | None] = []
        self._graph = None  # successors, built once per graph by _successors()

    def resource(self, track: str, *, process: str = "perfsim", policy: str = "fifo") -> int:
        """Add a resource (one task at a time) shown as ``track`` of ``process``; returns its id."""
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        self.labels.append((str(process), str(track)))
        self._policy.append(_POLICIES.index(policy))
        return len(self.labels) - 1

    def task(self, name: str, resource: int, duration_s: float, deps=(), *, after_start=(), priority: float = 0.0,
             args: dict | None = None) -> int:
        """Add a task; returns its id (tasks are numbered in the order they are added).

        ``deps`` are task ids that must finish first; ``after_start`` holds ``(task, lag_s)``
        pairs: the task may start ``lag_s`` seconds after that one started.
        """
        if not 0 <= resource < len(self.labels):
            raise ValueError(f"unknown resource {resource!r}")
        if not duration_s >= 0.0:
            raise ValueError(f"task {name!r} has duration {duration_s!r}; expected a number >= 0")
        n = len(self.names)
        self.names.append(name)
        self.resources.append(resource)
        self.durations.append(float(duration_s))
        self.priorities.append(float(priority))
        self.deps.append(())
        self.after_start.append(())
        self.args.append(args)
        self.depend(n, deps, after_start)
        return n

    def depend(self, task: int, deps=(), after_start=()):
        """Add dependencies to ``task`` (they may name tasks added after it)."""
        self.deps[task] += tuple(deps)
        self.after_start[task] += tuple((t, float(lag)) for t, lag in after_start)
        self._graph = None

    def _successors(self):
        """``(succ, lagged, waiting)``: per task, the tasks its end releases, the ``(task, lag)``
        its start releases, and how many dependencies it waits for; kept until the graph changes."""
        if self._graph is None:
            n = len(self.names)
            succ: list[list[int]] = [[] for _ in range(n)]
            lagged: list[list[tuple[int, float]]] = [[] for _ in range(n)]
            for i in range(n):
                for d in self.deps[i]:
                    if not 0 <= d < n:
                        raise ValueError(f"task {self.names[i]!r} depends on unknown task {d!r}")
                    succ[d].append(i)
                for d, lag in self.after_start[i]:
                    if not 0 <= d < n:
                        raise ValueError(f"task {self.names[i]!r} depends on unknown task {d!r}")
                    lagged[d].append((i, lag))
            waiting = [len(self.deps[i]) + len(self.after_start[i]) for i in range(n)]
            self._graph = (succ, lagged, waiting)
        return self._graph

    def run(self, durations=None) -> Schedule:
        """Simulate the graph; ``durations`` (one per task) replaces the given ones for this run.

        Raises ``RuntimeError`` when some task can never start (a dependency cycle).
        """
        n = len(self.names)
        dur = self.durations if durations is None else np.asarray(durations, dtype=float).tolist()
        if len(dur) != n:
            raise ValueError(f"expected {n} durations, got {len(dur)}")
        succ, lagged, waiting = self._successors()
        waiting = list(waiting)
        res, prio, policy = self.resources, self.priorities, self._policy
        n_res = len(self.labels)
        queues: list[list] = [[] for _ in range(n_res)]
        running = [False] * n_res
        busy = [0.0] * n_res
        start = [np.nan] * n
        end = [np.nan] * n
        events = EventQueue()
        push, pop_due = events.push, events.pop_due
        touched: list[int] = []  # resources that may start a task now
        for i in range(n):
            if waiting[i] == 0:
                r = res[i]
                heappush(queues[r], (prio[i] if policy[r] else 0.0, i))
                touched.append(r)
        now = 0.0
        done = 0
        while True:
            for r in touched:
                if running[r] or not queues[r]:
                    continue
                _, i = heappop(queues[r])
                running[r] = True
                d = dur[i]
                start[i] = now
                end[i] = finish = now + d
                busy[r] += d
                push(finish, _FINISH, i)
                if lagged[i]:
                    for j, lag in lagged[i]:
                        push(now + lag, _RELEASE, j)
            touched.clear()
            t, due = pop_due()
            if not due:
                break
            now = t
            for kind, i in due:
                if kind == _FINISH:
                    done += 1
                    r = res[i]
                    running[r] = False
                    touched.append(r)
                    released = succ[i]
                else:
                    released = (i,)
                for j in released:  # ready when its last dependency is met
                    waiting[j] -= 1
                    if waiting[j] == 0:
                        r = res[j]
                        heappush(queues[r], (prio[j] if policy[r] else now, j))
                        touched.append(r)
        if done < n:
            stuck = [self.names[i] for i in range(n) if np.isnan(start[i])][:5]
            raise RuntimeError(f"{n - done} tasks can never start (a dependency cycle?), e.g. {stuck}")
        end_arr = np.asarray(end, dtype=float)
        return Schedule(self, np.asarray(start, dtype=float), end_arr, float(end_arr.max(initial=0.0)),
                        np.asarray(busy, dtype=float))
