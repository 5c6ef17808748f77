"""Random power-cap clock problems for the tests of the joined clock search (perfsim.cost.clock)."""

import numpy as np


def random_problems(rng, boxes):
    """``solve_clock`` argument tuples, one per ``(shape, drawn, cap_low, cap_high)``: every input drawn
    uniform over ``drawn`` and broadcast to ``shape`` (axes of length 1 in ``drawn`` repeat), the cap a
    random share between ``cap_low`` and ``cap_high`` of the uncapped power."""
    problems = []
    for shape, drawn, low, high in boxes:

        def draw(a, b):
            return np.broadcast_to(rng.uniform(a, b, drawn), shape).copy()

        full = draw(0.01, 1.0)
        compute = full * draw(0, 1)
        memory = (full - compute) * draw(0, 1)
        clocked_w, bytes_w = draw(0, 250), draw(0, 80)
        uncapped = 120.0 + clocked_w + bytes_w
        cap = uncapped * draw(low, high)
        problems.append((cap, 0.1, 0.8, (full, compute, memory, memory * 0.5), 60.0, 60.0, clocked_w, bytes_w,
                         uncapped))
    return problems


def solve_joined(monkeypatch, problems):
    """``(alone, searches, together)``: each problem solved on its own, the shapes of the bisections
    ``solve_clocks`` runs on them together, and its results; checks that the joined results equal the
    lone ones bit for bit."""
    from perfsim.cost import clock as clock_module
    from perfsim.cost.clock import solve_clock

    alone = [solve_clock(*p) for p in problems]
    searches = []
    search = clock_module._search
    monkeypatch.setattr(clock_module, "_search", lambda *a, **k: searches.append(np.shape(a[1])) or search(*a, **k))
    together = clock_module.solve_clocks(problems)
    for (clock, fits), (one, ok) in zip(together, alone, strict=True):
        assert clock.shape == one.shape and clock.tobytes() == one.tobytes()
        assert fits.shape == ok.shape and np.array_equal(fits, ok)
    return alone, searches, together
