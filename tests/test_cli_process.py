"""The `perfsim` command as a user runs it (a process, not an in-process runner): the exit codes of
the command-line contract and --help's defaults."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _perfsim(*args):
    return subprocess.run([sys.executable, "-m", "perfsim", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})


def test_estimate_help_gives_every_option_a_default():
    done = _perfsim("estimate", "--help")
    assert done.returncode == 0
    blocks = re.split(r"\n  (?=-)", done.stdout.split("Options:")[1])
    missing = [b.split()[0] for b in blocks if b.strip() and "default" not in b and "required" not in b
               and "--help" not in b]
    assert not missing, missing


def test_an_inference_plan_given_seq_len_is_bad_input_naming_prompt_len():
    done = _perfsim("estimate", "--model", "llama2-7b", "--hardware", "a100-80gb", "--seq-len", "4096")
    assert done.returncode == 2 and done.stdout == ""
    assert "--prompt-len" in done.stderr and "Traceback" not in done.stderr


def test_an_infeasible_plan_exits_3_with_the_reason_first():
    done = _perfsim("estimate", "--model", "llama2-70b", "--hardware", "a100-80gb")
    assert done.returncode == 3
    assert done.stdout.startswith("feasible: NO  (does not fit") and "for reference only" in done.stdout
