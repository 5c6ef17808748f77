"""The dask backend of sweeps: chunks of a design space evaluated on a dask cluster's workers.

``dask.distributed`` is an optional dependency (``pip install perfsim[dask]``), imported only
when this backend is used. Each task evaluates one chunk with the same vectorised core as the
local backend and returns its table, so results are identical; at most a few chunks per worker
are in flight at a time, which bounds the memory of a sweep written to a file.
"""

from __future__ import annotations

import contextlib
import os
import sys

from perfsim.errors import InputError


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("the dask backend needs dask.distributed: pip install 'perfsim[dask]'",
                         field="backend") from None
    return distributed


def _spawnable() -> bool:
    """Whether worker processes can start: a spawned process imports the main script by its file
    (a script read from stdin has none; ``python -c`` and notebooks name no file and need none)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is None or os.path.isfile(main)


@contextlib.contextmanager
def client_for(scheduler):
    """A ``distributed.Client``: the one given, one connected to the address given, or one on a
    ``LocalCluster`` of this machine (closed again on exit) when ``scheduler`` is None: worker
    processes, or threads where the main script has no file for them to import. Workers that
    cannot start are an :class:`InputError` saying what to do."""
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is None:
        processes = _spawnable()
        if not processes:
            sys.stderr.write("perfsim: the dask workers run as threads of this process: worker processes import "
                             "the main script, and this one has no file (run from stdin)\n")
        try:
            cluster = distributed.LocalCluster(threads_per_worker=1, dashboard_address=None, processes=processes)
        except (RuntimeError, OSError, TimeoutError) as exc:  # "Nanny failed to start."
            raise InputError(f"the dask workers of a local cluster could not start ({exc}). Worker processes "
                             "import the main script again: put the sweep under `if __name__ == \"__main__\":`, "
                             "or pass scheduler= a running cluster's address or a distributed.Client (Client("
                             "processes=False) runs the workers as threads), or use backend='local'",
                             field="backend") from None
        with cluster, distributed.Client(cluster) as client:
            yield client
        return
    if not isinstance(scheduler, str):
        raise InputError(f"expected a scheduler address such as tcp://host:8786, got {scheduler!r}",
                         field="scheduler")
    try:
        client = distributed.Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the dask scheduler at {scheduler}: {exc}", field="scheduler") from None
    with client:
        yield client


def run_chunks_dask(evaluate, space, bounds, ids, constraints, keep_infeasible, scheduler,
                    in_flight_per_worker: int = 2):
    """Yield ``(id, DataFrame)`` for the chunks ``ids`` as the workers finish them; ``evaluate(space,
    start, stop, constraints, keep_infeasible)`` (a module-level function the workers can import)
    evaluates one chunk."""
    distributed = _distributed()
    ids = list(ids)
    with client_for(scheduler) as client:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        window = max(2, in_flight_per_worker * workers)
        space_future = client.scatter(space, broadcast=True)
        pending = iter(ids)
        futures = {}

        def submit():
            k = next(pending, None)
            if k is None:
                return None
            start, stop = bounds[k]
            f = client.submit(evaluate, space_future, start, stop, list(constraints), keep_infeasible, pure=False)
            futures[f] = k
            return f

        queue = distributed.as_completed([f for f in (submit() for _ in range(window)) if f is not None])
        try:
            for future in queue:
                k = futures.pop(future)
                df = future.result()
                new = submit()
                if new is not None:
                    queue.add(new)
                yield k, df
        finally:
            for f in futures:
                f.cancel()
