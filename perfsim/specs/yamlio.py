"""YAML loading that remembers where every key was written, for error messages."""

from __future__ import annotations

from pathlib import Path

import yaml

from perfsim.errors import InputError
from perfsim.specs.paths import read_text


class LineDict(dict):
    """A dict that knows the line of each of its keys (``lines[key]``) and its own file."""

    __slots__ = ("file", "line", "lines")

    def __init__(self, *args, file=None, line=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.file = file
        self.line = line
        self.lines: dict = {}

    def where(self, key=None) -> dict:
        """``file=`` and ``line=`` keywords for an :class:`InputError` about ``key``."""
        return {"file": self.file, "line": self.lines.get(key, self.line)}


#: libyaml's parser where PyYAML was built with it (several times faster), else PyYAML's own
_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: nesting a document read by libyaml may have; a deeper one is read again by PyYAML's parser, whose
#: answer (a recursion limit) it then gets
_FAST_DEPTH = 50


def _loader_for(path: str, base=yaml.SafeLoader):
    class Loader(base):
        pass

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        out = LineDict(file=path, line=node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise InputError("mapping key is not hashable", file=path,
                                 line=key_node.start_mark.line + 1) from None
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=path, line=key_node.start_mark.line + 1)
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = key_node.start_mark.line + 1
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def load_yaml(path: str | Path, field: str | None = None):
    """Load one YAML file; mappings come back as :class:`LineDict`.

    Raises
    ------
    InputError
        The file cannot be read, is not a regular UTF-8 text file (:func:`~perfsim.specs.paths.read_text`)
        or is not valid YAML (with its line).
    """
    path = str(path)
    return loads_yaml(read_text(path, field), path)


def loads_yaml(text: str, path: str = "<string>"):
    """Parse YAML text, as :func:`load_yaml` does for a file."""
    try:
        return _load(text, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InputError(f"malformed YAML: {exc.problem or exc}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", file=path) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InputError(f"malformed YAML: {exc}", file=path) from None
    except RecursionError:
        raise InputError("malformed YAML: nested too deeply", file=path) from None


def _load(text: str, path: str):
    """The document in ``text``, read by libyaml where it reads it as PyYAML would: a document libyaml
    refuses, or nested deeper than :data:`_FAST_DEPTH`, is read by PyYAML's parser, so what is
    accepted and every message are PyYAML's."""
    if _FAST is not yaml.SafeLoader:
        try:
            data = yaml.load(text, Loader=_loader_for(path, _FAST))
        except (yaml.YAMLError, ValueError, RecursionError):
            pass
        else:
            if _depth(data) <= _FAST_DEPTH:
                return data
    return yaml.load(text, Loader=_loader_for(path))


def _depth(data, level: int = 0) -> int:
    """Nesting of mappings and lists in ``data`` (counted up to one past :data:`_FAST_DEPTH`)."""
    if level > _FAST_DEPTH:
        return level
    if isinstance(data, dict):
        return max((_depth(v, level + 1) for v in data.values()), default=level + 1)
    if isinstance(data, list):
        return max((_depth(v, level + 1) for v in data), default=level + 1)
    return level
