"""Sizes counted before any work, one writer per sweep output, and a dask cluster that cannot start."""

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import perfsim
import perfsim.explore.run
from perfsim.cli import cli
from perfsim.errors import InputError

SMALL = {"model": "llama3.2-1b", "hardware": "a100-80gb"}
#: 10^12 rows: four axes of 1000 values
TERA_AXES = {name: list(range(1, 1001)) for name in ("tp", "batch", "prompt_len", "gen_len")}
TERA_SPEC = "model: llama3.2-1b\nhardware: a100-80gb\naxes:\n" + "".join(
    f"  {name}: {{range: [1, 1000, 1]}}\n" for name in TERA_AXES)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_a_sweep_of_a_trillion_rows_is_refused_at_once(tmp_path):
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"^max_rows: the sweep has 1,000,000,000,000 rows .* more than the limit of "
                                         r"50,000,000; pass max_rows=1000000000000"):
        perfsim.sweep(**SMALL, **TERA_AXES)
    assert time.perf_counter() - start < 2.0
    spec, out = tmp_path / "tera.yaml", tmp_path / "tera.csv"
    spec.write_text(TERA_SPEC)
    start = time.perf_counter()
    result = run("sweep", str(spec), "--out", str(out))
    assert time.perf_counter() - start < 2.0
    assert result.exit_code == 2 and "--max-rows: the sweep has 1,000,000,000,000 rows" in result.output
    assert "pass --max-rows 1000000000000" in result.output
    assert not out.exists() and not (tmp_path / "tera.csv.partial").exists()


def test_a_trillion_row_sweep_command_exits_2_quickly(tmp_path):
    spec, out = tmp_path / "tera.yaml", tmp_path / "tera.csv"
    spec.write_text(TERA_SPEC)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "perfsim", "sweep", str(spec), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "--max-rows" in done.stderr
    assert elapsed < 10.0  # the interpreter and imports included; the refusal itself is timed above
    assert not out.exists()


def test_max_rows_raises_the_limit(tmp_path):
    with pytest.raises(InputError, match="^max_rows: the sweep has 6 rows"):
        perfsim.sweep(**SMALL, tp=[1, 2], batch=[1, 2, 3], max_rows=5)
    assert len(perfsim.sweep(**SMALL, tp=[1, 2], batch=[1, 2, 3], max_rows=6)) == 6
    with pytest.raises(InputError, match="^max_rows: expected a whole number"):
        perfsim.sweep(**SMALL, max_rows=float("nan"))
    spec = tmp_path / "s.yaml"
    spec.write_text("model: llama3.2-1b\nhardware: a100-80gb\naxes: {tp: [1, 2], batch: [1, 2, 3]}\n")
    result = run("sweep", str(spec), "--out", str(tmp_path / "o.csv"), "--max-rows", "5")
    assert result.exit_code == 2 and "pass --max-rows 6" in result.output
    result = run("sweep", str(spec), "--out", str(tmp_path / "o.csv"), "--max-rows", "6")
    assert result.exit_code == 0, result.output


def test_an_in_memory_sweep_larger_than_memory_is_refused(monkeypatch):
    monkeypatch.setattr(perfsim.explore.run, "physical_memory", lambda: 1_000_000)
    with pytest.raises(InputError, match=r"^axes: a sweep of 1,000 rows needs about 2 MB of memory, more than this "
                                         r"machine's 1 MB; write it to a file"):
        perfsim.sweep(**SMALL, batch=list(range(1, 1001)))
    assert len(perfsim.sweep(**SMALL, batch=[1, 2])) == 2


def test_serve_refuses_more_requests_than_the_limit(tmp_path):
    with pytest.raises(InputError, match=r"^num_requests: 1,000,000,000,000 requests, above the limit of 1,000,000 "
                                         r"requests; pass max_requests=1000000000000"):
        perfsim.serve(**SMALL, num_requests=10**12)
    with pytest.raises(InputError, match="^num_requests: 20 requests, above the limit of 10"):
        perfsim.serve(**SMALL, num_requests=20, max_requests=10)
    assert perfsim.serve(**SMALL, num_requests=20, max_requests=20, prompt_len=64, gen_len=4)["completed"] == 20
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_len,gen_len\n" + "".join(f"{i / 10},64,4\n" for i in range(20)))
    with pytest.raises(InputError, match=r"^trace: 20 rows or more, above the limit of 10 requests"):
        perfsim.serve(**SMALL, trace=str(trace), max_requests=10)
    assert perfsim.serve(**SMALL, trace=str(trace), max_requests=20)["completed"] == 20
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("\n".join(["64"] * 30))
    with pytest.raises(InputError, match=r"^prompt_len: 29 rows or more, above the limit of 10"):
        perfsim.serve(**SMALL, num_requests=5, prompt_len=str(lengths), max_requests=10)
    result = run("serve", "--model", "llama3.2-1b", "--hardware", "a100-80gb", "--num-requests", "1e12")
    assert result.exit_code == 2 and "--max-requests 1000000000000" in result.output
    result = run("serve", "--model", "llama3.2-1b", "--hardware", "a100-80gb", "--trace", str(trace),
                 "--max-requests", "10")
    assert result.exit_code == 2 and "trace: 20 rows or more" in result.output


def test_counting_lines_does_not_need_a_final_newline(tmp_path):
    from perfsim.specs.paths import count_lines

    path = tmp_path / "x.csv"
    for text, lines in (("", 0), ("a", 1), ("a\n", 1), ("a\nb", 2), ("a\n" * 3_000_000, 3_000_000)):
        path.write_text(text)
        assert count_lines(path, "trace") == lines
    os.unlink(path)


# --- one writer per sweep output ---
SLOW_SPEC = "model: llama3.2-1b\nhardware: a100-80gb\naxes:\n  batch: {range: [1, 60000, 1]}\n"


def _sweep_process(spec, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "perfsim", "sweep", str(spec), "--out", str(out), "--chunk-rows",
                             "1000", "--no-progress", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_second_writer_is_refused_and_the_first_output_stays_intact(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    spec, out = tmp_path / "s.yaml", tmp_path / "o.parquet"
    lock = tmp_path / "o.parquet.lock"
    spec.write_text(SLOW_SPEC)
    first = _sweep_process(spec, out)
    deadline = time.monotonic() + 60
    while not (tmp_path / "o.parquet.partial").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists() and first.poll() is None
    second = _sweep_process(spec, out, "--overwrite")  # even --overwrite waits for the writer to finish
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    assert f"--out: another sweep (pid {first.pid} on " in err and "is writing" in err and "Traceback" not in err
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert pq.read_table(out).num_rows == 60000
    assert not lock.exists() and not (tmp_path / "o.parquet.partial").exists()
    third = _sweep_process(spec, out)
    _, err = third.communicate(timeout=60)
    assert third.returncode == 2 and "exists; pass --overwrite" in err
    assert pq.read_table(out).num_rows == 60000


def test_two_writers_started_together_leave_one_whole_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    spec, out = tmp_path / "s.yaml", tmp_path / "o.parquet"
    spec.write_text(SLOW_SPEC.replace("60000", "20000"))
    runs = [_sweep_process(spec, out) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refusal = next(err for code, err in results if code == 2)
    assert "another sweep" in refusal or "exists; pass --overwrite" in refusal
    assert pq.read_table(out).num_rows == 20000


def test_a_stale_lock_is_taken_over_and_a_live_one_of_another_host_refuses(tmp_path):
    import json
    import socket

    from perfsim.explore.files import write_sweep

    out = tmp_path / "o.csv"
    lock = tmp_path / "o.csv.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    assert write_sweep({**SMALL, "tp": [1, 2]}, out)["rows"] == 2
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": "now"}))
    with pytest.raises(InputError, match=r"^--out: another sweep \(pid \d+ on elsewhere, started now\) is writing"):
        write_sweep({**SMALL, "tp": [1, 2]}, out, overwrite=True)
    lock.write_text("")
    with pytest.raises(InputError, match="exists but names no writer"):
        write_sweep({**SMALL, "tp": [1, 2]}, out, overwrite=True)
    lock.unlink()
    assert write_sweep({**SMALL, "tp": [1, 2, 4]}, out, overwrite=True)["rows"] == 3


# --- dask without a scheduler ---
def test_dask_workers_that_cannot_start_are_an_input_error_saying_what_to_do(monkeypatch):
    distributed = pytest.importorskip("distributed")

    def nanny_fails(**kwargs):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(distributed, "LocalCluster", nanny_fails)
    with pytest.raises(InputError, match=r"^backend: the dask workers of a local cluster could not start \(Nanny "
                                         r"failed to start.\).*__name__ == \"__main__\".*backend='local'"):
        perfsim.sweep(**SMALL, batch=[1, 2], backend="dask")


def test_dask_workers_are_threads_when_the_main_script_has_no_file(monkeypatch, capsys):
    distributed = pytest.importorskip("distributed")
    asked = {}

    def cluster(**kwargs):
        asked.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(distributed, "LocalCluster", cluster)
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "<stdin>", raising=False)
    with pytest.raises(InputError, match="^backend: "):
        perfsim.sweep(**SMALL, batch=[1, 2], backend="dask")
    assert asked["processes"] is False
    assert "run as threads of this process" in capsys.readouterr().err
    monkeypatch.setattr(sys.modules["__main__"], "__file__", __file__)
    with pytest.raises(InputError, match="^backend: "):
        perfsim.sweep(**SMALL, batch=[1, 2], backend="dask")
    assert asked["processes"] is True


def test_serve_refuses_batches_and_spans_its_tables_cannot_hold():
    with pytest.raises(InputError, match=r"^max_batch: at most 65,536 sequences per instance, got 1000000"):
        perfsim.serve(**SMALL, num_requests=5, max_batch=10**6)
    with pytest.raises(InputError, match=r"^arrival_rate: 5 requests at 1e-16/s span about 5e\+16 s, more than "
                                         r"10,000,000 power windows of 1 s"):
        perfsim.serve(**SMALL, num_requests=5, arrival_rate=1e-16)
    with pytest.raises(InputError, match=r"^power_window_s: must be at least 0.001 s"):
        perfsim.serve(**SMALL, num_requests=5, power_window_s=1e-9)


def test_long_messages_are_cut_to_one_readable_line():
    with pytest.raises(InputError) as info:
        perfsim.serve(**SMALL, num_requests=5, disaggregate="x" * 100_000)
    text = str(info.value)
    assert text.startswith("disaggregate: expected 'P:D'") and " ... " in text and len(text) < 1000
    assert perfsim.estimate(**SMALL, pp=1.0, tp=2.0)["plan"]["pp_layers"] == [16]
