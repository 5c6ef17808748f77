"""YAML is read by libyaml where PyYAML has it, with the same data, lines and messages as PyYAML's
own parser."""

from __future__ import annotations

import pytest
import yaml

from perfsim.errors import InputError
from perfsim.specs import yamlio
from perfsim.specs.paths import zoo
from perfsim.specs.yamlio import LineDict, loads_yaml


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, LineDict) and (a.lines != b.lines or a.line != b.line or a.file != b.file):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("folder", ["hardware_specs", "workloads", "runtimes"])
def test_every_data_file_reads_the_same_with_either_parser(folder):
    for path in zoo(folder).values():
        text = path.read_text(encoding="utf-8")
        ours = loads_yaml(text, str(path))
        theirs = yaml.load(text, Loader=yamlio._loader_for(str(path)))
        assert _same(ours, theirs), path


def _message(text: str) -> str:
    with pytest.raises(InputError) as info:
        loads_yaml(text, "x.yaml")
    return str(info.value)


def test_messages_are_pyyaml_s(monkeypatch):
    texts = ("a: [1, 2\nb: 3\n", "a: 1\na: 2\n", "a:\n\t- 1\n", "{[1]: 2}\n", "a: \x07\n")
    ours = [_message(t) for t in texts]
    monkeypatch.setattr(yamlio, "_FAST", yaml.SafeLoader)  # PyYAML's parser only
    assert ours == [_message(t) for t in texts]


def test_deep_nesting_is_left_to_pyyaml():
    deep = "[" * (yamlio._FAST_DEPTH + 5) + "]" * (yamlio._FAST_DEPTH + 5)
    assert _same(loads_yaml(deep), yaml.load(deep, Loader=yamlio._loader_for("<string>")))
    with pytest.raises(InputError, match="malformed YAML"):
        loads_yaml("[" * 100_000)
