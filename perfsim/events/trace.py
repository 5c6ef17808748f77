"""Chrome trace-event export (opens in Perfetto and chrome://tracing).

A trace is a list of slices ``{"track", "name", "start_s", "dur_s"}`` (optional ``"process"``,
``"args"``, ``"cat"``) and of counters ``{"track", "name", "time_s", "value"}`` (power, queue
length). Each process (a device, an instance) and track (a stream, a link) gets its own row.
"""

from __future__ import annotations

import json
import os
import tempfile

from perfsim.errors import InputError
from perfsim.specs.paths import check_writable


class _Ids:
    """Process and thread ids in order of first appearance."""

    def __init__(self):
        self.pids: dict = {}
        self.tids: dict = {}

    def __call__(self, process, track):
        pid = self.pids.setdefault(process, len(self.pids) + 1)
        return pid, self.tids.setdefault((process, track), len(self.tids) + 1)

    def metadata(self):
        for name, pid in self.pids.items():
            yield {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": str(name)}}
        for (process, track), tid in self.tids.items():
            yield {"name": "thread_name", "ph": "M", "pid": self.pids[process], "tid": tid, "args": {"name": str(track)}}


def _events(slices, counters, ids):
    for s in slices:
        pid, tid = ids(s.get("process", "perfsim"), s["track"])
        ev = {"name": s["name"], "cat": s.get("cat", "task"), "ph": "X", "pid": pid, "tid": tid,
              "ts": float(s["start_s"]) * 1e6, "dur": float(s["dur_s"]) * 1e6}
        if s.get("args"):
            ev["args"] = s["args"]
        yield ev
    for s in counters:
        pid, tid = ids(s.get("process", "perfsim"), s["track"])
        yield {"name": s["name"], "ph": "C", "pid": pid, "tid": tid, "ts": float(s["time_s"]) * 1e6,
               "args": {s["name"]: float(s["value"])}}


def check_path(path, field: str = "trace_out") -> str:
    """The trace file's path, checked before any work: its directory must exist and it must not
    be a directory itself (:class:`~perfsim.errors.InputError` naming ``field`` otherwise)."""
    return os.fspath(check_writable(path, field))


def write_chrome_trace(path, slices, counters=()) -> str:
    """Stream the trace to ``path`` (slices and counters may be generators: nothing is held in
    memory), atomically: a temporary file in the same directory, then a rename. Returns the path."""
    path = check_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".perfsim-trace-", suffix=".json")
    except OSError as exc:
        raise InputError(f"cannot write in {directory}: {exc.strerror}", field="trace_out") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's owner-only mode
        with os.fdopen(fd, "w") as fh:
            fh.write('{"displayTimeUnit": "ms", "traceEvents": [')
            ids = _Ids()
            first = True
            for event in _events(slices, counters, ids):
                fh.write(("" if first else ",\n") + json.dumps(event, separators=(",", ":")))
                first = False
            for event in ids.metadata():
                fh.write(("" if first else ",\n") + json.dumps(event, separators=(",", ":")))
                first = False
            fh.write("]}\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
