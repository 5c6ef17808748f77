import json

import pytest

from perfsim.errors import InputError
from perfsim.events.trace import write_chrome_trace


def test_trace_structure(tmp_path):
    path = tmp_path / "t.json"
    slices = [{"process": "device 0", "track": "compute", "name": "F0", "start_s": 0.0, "dur_s": 1e-3},
              {"process": "device 1", "track": "compute", "name": "F0", "start_s": 1e-3, "dur_s": 2e-3,
               "args": {"micro_batch": 0}}]
    write_chrome_trace(path, slices, counters=[{"process": "device 0", "track": "power", "name": "power_w",
                                                "time_s": 0.0, "value": 500.0}])
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert [e["dur"] for e in complete] == pytest.approx([1000.0, 2000.0])
    assert {e["pid"] for e in complete} == {1, 2}
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert {"device 0", "device 1", "compute"} <= names
    assert any(e["ph"] == "C" for e in events)


def test_trace_missing_directory(tmp_path):
    with pytest.raises(InputError):
        write_chrome_trace(tmp_path / "nope" / "t.json", [])
