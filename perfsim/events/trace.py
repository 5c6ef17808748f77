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


def chrome_trace(slices, counters=()) -> dict:
    """Build the trace-event JSON object: complete events ``ph: X`` in microseconds."""
    pids: dict = {}
    tids: dict = {}
    events = []

    def ids(process, track):
        pid = pids.setdefault(process, len(pids) + 1)
        tid = tids.setdefault((process, track), len(tids) + 1)
        return pid, tid

    for s in slices:
        pid, tid = ids(s.get("process", "perfsim"), s["track"])
        ev = {"name": s["name"], "cat": s.get("cat", "task"), "ph": "X", "pid": pid, "tid": tid,
              "ts": float(s["start_s"]) * 1e6, "dur": float(s["dur_s"]) * 1e6}
        if s.get("args"):
            ev["args"] = s["args"]
        events.append(ev)
    for s in counters:
        pid, _ = ids(s.get("process", "perfsim"), s["track"])
        events.append({"name": s["name"], "ph": "C", "pid": pid, "ts": float(s["time_s"]) * 1e6,
                       "args": {s["name"]: float(s["value"])}})
    meta = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": str(name)}}
            for name, pid in pids.items()]
    meta += [{"name": "thread_name", "ph": "M", "pid": pids[proc], "tid": tid, "args": {"name": str(track)}}
             for (proc, track), tid in tids.items()]
    return {"traceEvents": meta + events, "displayTimeUnit": "ms"}


def check_path(path, field: str = "trace_out") -> str:
    """The trace file's path, checked before any work: its directory must exist and it must not
    be a directory itself (:class:`~perfsim.errors.InputError` naming ``field`` otherwise)."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InputError(f"expected a file path, got {path!r}", field=field)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"directory {directory} does not exist", field=field, value=path)
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory; expected a file such as step.json", field=field, value=path)
    return path


def write_chrome_trace(path, slices, counters=()) -> str:
    """Write the trace atomically (temporary file, then rename); returns the path."""
    path = check_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    data = chrome_trace(slices, counters)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".perfsim-trace-", suffix=".json")
    except OSError as exc:
        raise InputError(f"cannot write in {directory}: {exc.strerror}", field="trace_out", value=path) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's owner-only mode
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
