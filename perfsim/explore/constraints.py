"""Constraints over result columns: a small, safe expression language evaluated on arrays.

A constraint is a string such as ``memory_per_device_gib.total <= 0.9 * memory_per_device_gib.capacity``
or ``ttft_s < 0.5 and tpot_s < 0.05``. The grammar has column names (dotted, as the result
columns are), numbers, quoted strings (for label columns such as ``model`` or ``schedule``),
``true`` / ``false``, the arithmetic ``+ - * /``, comparisons ``< <= > >= == !=`` (chained
as in Python: ``1 <= tp <= 4``), ``and``, ``or``, ``not`` and parentheses. Nothing is passed to
``eval``: the text is tokenised and parsed here, and evaluated with NumPy over whole columns, so a
million rows cost a few array operations. A comparison with a missing number (NaN, as in an
infeasible row) is false.

>>> import numpy as np
>>> c = Constraint("ttft_s < 0.5 and tp <= 4")
>>> c.columns
('ttft_s', 'tp')
>>> c.evaluate({"ttft_s": np.array([0.1, 0.2, 0.9]), "tp": np.array([8, 2, 2])}).tolist()
[False, True, False]
"""

from __future__ import annotations

import operator
import re

import numpy as np

from perfsim.errors import InputError, close_matches

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\))
""", re.VERBOSE)

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
            "!=": operator.ne}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_WORDS = {"and", "or", "not", "true", "false"}


def _tokens(text: str, field: str):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InputError(f"cannot read {text[pos:pos + 12]!r} at character {pos + 1} of {text!r} "
                             "(constraints use column names, numbers, comparisons, and/or/not)", field=field)
        kind = m.lastgroup
        if kind != "space":
            value = m.group()
            if kind == "name" and value.lower() in _WORDS:
                kind, value = "word", value.lower()
            out.append((kind, value, pos))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent: or → and → not → comparison → sum → product → unary → atom."""

    def __init__(self, text: str, field: str):
        self.text, self.field = text, field
        self.tokens = _tokens(text, field)
        self.i = 0
        self.columns: list[str] = []

    def error(self, message):
        return InputError(f"{message} in {self.text!r}", field=self.field)

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None, len(self.text))

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            return None
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise self.error("empty constraint")
        node = self.disjunction()
        if self.i < len(self.tokens):
            raise self.error(f"unexpected {self.tokens[self.i][1]!r} at character {self.tokens[self.i][2] + 1}")
        return node

    def disjunction(self):
        node = self.conjunction()
        while self.take("word", "or"):
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self):
        node = self.negation()
        while self.take("word", "and"):
            node = ("and", node, self.negation())
        return node

    def negation(self):
        if self.take("word", "not"):
            return ("not", self.negation())
        return self.comparison()

    def comparison(self):
        first = self.sum()
        parts = []
        while self.peek()[0] == "op" and self.peek()[1] in _COMPARE:
            op = self.take()[1]
            parts.append((op, self.sum()))
        if not parts:
            return ("truth", first)
        return ("compare", first, parts)

    def sum(self):
        node = self.product()
        while self.peek()[0] == "op" and self.peek()[1] in "+-":
            node = ("arith", self.take()[1], node, self.product())
        return node

    def product(self):
        node = self.unary()
        while self.peek()[0] == "op" and self.peek()[1] in "*/":
            node = ("arith", self.take()[1], node, self.unary())
        return node

    def unary(self):
        if self.take("op", "-"):
            return ("neg", self.unary())
        return self.atom()

    def atom(self):
        tok = self.peek()
        if self.take("op", "("):
            node = self.disjunction()
            if not self.take("op", ")"):
                raise self.error(f"missing ')' at character {self.peek()[2] + 1}")
            return node
        if self.take("number"):
            return ("const", float(tok[1]))
        if self.take("string"):
            return ("const", tok[1][1:-1])
        if tok[0] == "word" and tok[1] in ("true", "false"):
            self.i += 1
            return ("const", tok[1] == "true")
        if self.take("name"):
            if tok[1] not in self.columns:
                self.columns.append(tok[1])
            return ("column", tok[1])
        if tok[0] is None:
            raise self.error("unexpected end")
        raise self.error(f"unexpected {tok[1]!r} at character {tok[2] + 1}")


def _values(column):
    """A column as an array a comparison can use (categoricals as their labels)."""
    if hasattr(column, "to_numpy"):
        column = column.to_numpy()
    return np.asarray(column)


class Constraint:
    """One parsed constraint; :meth:`evaluate` gives a boolean array over the rows of a table."""

    def __init__(self, text: str, field: str = "constraints"):
        if not isinstance(text, str):
            raise InputError(f"a constraint is a string such as 'ttft_s < 0.5', got {text!r}", field=field)
        self.text, self.field = text, field
        parser = _Parser(text, field)
        self.tree = parser.parse()
        self.columns = tuple(parser.columns)

    def check(self, columns):
        """Raise :class:`~perfsim.errors.InputError` naming any column the table does not have."""
        known = list(columns)
        for name in self.columns:
            if name not in known:
                # "total" → "memory_per_device_gib.total": the last part of a dotted name matches too
                tail = name.rsplit(".", 1)[-1]
                matches = [k for k in known if k != name and k.rsplit(".", 1)[-1] == tail][:3]
                matches = matches or close_matches(name, known)
                hint = f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""
                raise InputError(f"unknown column {name!r} in {self.text!r}{hint}", field=self.field)

    def evaluate(self, table) -> np.ndarray:
        """Rows of ``table`` (a mapping of column name → array, or a DataFrame) meeting the constraint."""
        self.check(table.keys() if not hasattr(table, "columns") else table.columns)
        n = len(table[next(iter(table.keys()))]) if not hasattr(table, "columns") else len(table)
        return np.broadcast_to(np.asarray(self._eval(self.tree, table), dtype=bool), (n,))

    def _eval(self, node, table):
        kind = node[0]
        if kind == "const":
            return node[1]
        if kind == "column":
            return _values(table[node[1]])
        if kind == "neg":
            return -self._eval(node[1], table)
        if kind == "arith":
            a, b = self._eval(node[2], table), self._eval(node[3], table)
            with np.errstate(divide="ignore", invalid="ignore"):
                return _ARITH[node[1]](np.asarray(a, dtype=float), np.asarray(b, dtype=float))
        if kind == "compare":
            left = self._eval(node[1], table)
            result = True
            for op, right_node in node[2]:
                right = self._eval(right_node, table)
                try:
                    with np.errstate(invalid="ignore"):
                        result = result & _COMPARE[op](left, right)
                except TypeError:
                    raise InputError(f"cannot compare a number with a label in {self.text!r}",
                                     field=self.field) from None
                left = right
            return result
        if kind == "truth":
            value = self._eval(node[1], table)
            if isinstance(value, (str, float, int)) and not isinstance(value, bool):
                raise InputError(f"{self.text!r} is not a condition: compare it with something", field=self.field)
            arr = np.asarray(value)
            if arr.dtype != bool:
                raise InputError(f"{self.text!r} is not a condition (not true/false): compare it with something",
                                 field=self.field)
            return arr
        if kind == "not":
            return ~np.asarray(self._eval(node[1], table), dtype=bool)
        a = np.asarray(self._eval(node[1], table), dtype=bool)
        b = np.asarray(self._eval(node[2], table), dtype=bool)
        return a & b if kind == "and" else a | b


def parse_constraints(constraints, field: str = "constraints") -> list[Constraint]:
    """``None``, one string or a list of strings → parsed :class:`Constraint` objects (all must hold)."""
    if constraints is None:
        return []
    if isinstance(constraints, str):
        constraints = [constraints]
    if not isinstance(constraints, (list, tuple)):
        raise InputError("expected a list of expressions such as 'ttft_s < 0.5'", field=field)
    return [Constraint(text, f"{field}[{i}]") for i, text in enumerate(constraints)]


def meets(constraints: list[Constraint], table) -> np.ndarray:
    """Rows of ``table`` meeting every constraint (all rows when there are none)."""
    n = len(table) if hasattr(table, "columns") else len(table[next(iter(table.keys()))])
    ok = np.ones(n, dtype=bool)
    for c in constraints:
        ok &= c.evaluate(table)
    return ok
