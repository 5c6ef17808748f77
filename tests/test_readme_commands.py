"""Every ``perfsim`` command in README.md runs as written (exit 0), except those naming a file the
reader supplies (a placeholder path, a request trace, a dask scheduler address)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from perfsim.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = ("path/to/", "big.yaml", "requests.csv", "tcp://", "Ctrl-C")


def _commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S):
        line = ""
        for raw in block.splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            line += raw.rstrip("\\").rstrip() + " "
            if raw.endswith("\\"):
                continue
            if line.startswith("perfsim ") and not any(p in line for p in PLACEHOLDERS):
                commands.append(line.split(" # ")[0].strip())
            line = ""
    return commands


COMMANDS = _commands()


def test_the_readme_has_commands_of_every_kind():
    kinds = {c.split()[1] for c in COMMANDS}
    assert {"estimate", "serve", "sweep", "gemm", "collective", "memcpy", "plot", "validate", "list"} <= kinds


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples", path / "examples")
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert result.exit_code == 0, (command, result.output[-2000:])
