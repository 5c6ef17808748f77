"""State of a serving run: per-request progress and each instance's iteration records.

A request moves ``WAITING`` → ``PREFILLING`` → ``DECODING`` → ``DONE`` (back to ``WAITING`` when
preempted); its KV cache is held in blocks of ``BLOCK_TOKENS`` tokens. Every iteration an instance
runs is a row of :class:`Records` whose third column is its kind (:data:`KINDS`).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

BLOCK_TOKENS = 16  # vLLM's default KV block

PREFILL, DECODE, MIXED = 0, 1, 2
KINDS = ("prefill", "decode", "mixed")
#: columns of an iteration record
COLUMNS = ("start", "dur", "kind", "tokens", "logits", "n_dec", "context", "n_pre", "prompt", "used_blocks",
           "running")
WAITING, PREFILLING, DECODING, DONE = 0, 1, 2, 3
_NAN = float("nan")
_GATHER_ROWS = 16384  # rows of the records' array written at a time (:meth:`Records.array`)


def blocks_for(tokens):
    """KV blocks that hold ``tokens`` tokens."""
    return -(-tokens // BLOCK_TOKENS)


class RequestState:
    """Per-request state as flat lists (fast scalar access in the loop), turned into arrays at the end;
    the times a request's tokens came are packed (written once or twice a request and seldom read:
    no float object kept per request, to free or to read back at the end)."""

    def __init__(self, arrival, prompt, gen):
        n = len(arrival)
        self.arrival = arrival.tolist()
        self.prompt = prompt.tolist()
        self.gen = gen.tolist()
        # (written through memoryviews: an item store through one converts the number without the array's
        # argument parsing)
        self.first = memoryview(array("d", [_NAN]) * n)
        self.finish = memoryview(array("d", [_NAN]) * n)
        # tokens generated so far and the latest one's time (while decoding: those at its joining, the
        # instance's decode steps since then count the others)
        self.last_tok = memoryview(array("d", [_NAN]) * n)
        self.done = [0] * n
        self.state = [WAITING] * n
        self.kv_base = [0] * n  # KV length minus the instance's decode-step count at joining
        self.join_step = [0] * n  # the instance's decode-step count when it joined the batch
        self.finish_step = [-1] * n
        self.admit = [-1] * n  # id of the latest admission (entries of older ones are stale)
        self.prefilled = [0] * n  # prompt tokens prefilled so far (chunked prefill)
        self.itl_value = array("d")  # every gap between tokens (packed: a million of them take no objects)
        self.itl_weight = []  # how many tokens had it (counts: a list takes them without a conversion each)
        #: runs of an instance's decode rows each of which began as the one before it ended (their gaps: :meth:`itl`),
        #: four numbers each: ``itl_value``'s length then, the id of the instance's :class:`Records`, the first row
        #: and the row past the last
        self.itl_runs = array("q")
        self.preemptions = 0

    def itl(self, records):
        """Every gap between tokens and how many tokens had it (arrays): ``itl_value`` and ``itl_weight``
        with :attr:`itl_runs` in their places, rows of ``records`` (the instances' :class:`Records`): a
        decode iteration that began as the one before it in the same batch ended gives each of its
        sequences its length as their gap, ``(start + length) - start`` (its end less the one before, as
        the loop's clock added them)."""
        values, weights = np.asarray(self.itl_value, dtype=float), np.asarray(self.itl_weight, dtype=float)
        if not self.itl_runs:
            return values, weights
        pos, key, lo, hi = np.frombuffer(self.itl_runs, dtype=np.int64).reshape(-1, 4).T
        lens = hi - lo
        columns = [[np.frombuffer(rec.decode[c], dtype=float) for rec in records] for c in range(3)]
        if len(records) > 1:  # (the instances' columns joined: each run's rows from where its instance's begin)
            ids = np.array([id(rec) for rec in records])
            first = np.cumsum([0] + [len(column) for column in columns[0][:-1]])
            lo = lo + first[np.argsort(ids)][np.searchsorted(np.sort(ids), key)]
        start, length, seqs = (np.concatenate(column) if len(column) > 1 else column[0] for column in columns)
        count = np.arange(int(lens.sum()))
        rows = np.repeat(lo - (np.cumsum(lens) - lens), lens) + count  # (each run's rows, in order)
        taken = np.zeros(len(values) + len(rows), dtype=bool)
        taken[np.repeat(pos, lens) + count] = True  # (a run goes before the entry at its position)
        out_v, out_w = np.empty(len(taken)), np.empty(len(taken))
        begun = start[rows]
        out_v[taken], out_w[taken] = (begun + length[rows]) - begun, seqs[rows]
        kept = ~taken
        out_v[kept], out_w[kept] = values, weights
        return out_v, out_w


def grow(columns):
    """More room in packed columns written in place (a quarter more rows, at least 4,096); their new size."""
    room = bytes(8 * max(len(columns[0]) // 4, 4096))
    for column in columns:
        column.frombytes(room)
    return len(columns[0])


@dataclass
class Records:
    """An instance's iterations, one row each (see :data:`COLUMNS`)."""

    rows: list = field(default_factory=list)
    blocks: list = field(default_factory=list)  # arrays of the same columns (static decode runs)
    #: decode iterations apart, packed: their start, length, sequences, mean context and KV blocks in use
    #: (the other columns follow: every sequence decodes one token, none is prefilled)
    decode: tuple = field(default_factory=lambda: tuple(array("d") for _ in range(5)))
    #: prefill iterations of whole prompts apart, packed: their start, length, tokens, prompts, equivalent
    #: prompt length, KV blocks in use and sequences running (each prompt samples its first token)
    prefill: tuple = field(default_factory=lambda: tuple(array("d") for _ in range(7)))
    #: rows of ``decode`` and ``prefill`` written (their columns are written in place, with room beyond: :meth:`grow`)
    filled: list = field(default_factory=lambda: [0, 0])
    #: ``decode`` and ``prefill``'s columns as memoryviews, through which the simulation loops write them (an item
    #: store through a view converts the number without the array's argument parsing); made again as they grow
    views: list = field(default=None, repr=False)

    def __post_init__(self):
        self.views = [tuple(map(memoryview, self.decode)), tuple(map(memoryview, self.prefill))]

    def grow(self, part):
        """More room in the columns of ``decode`` (``part`` 0) or ``prefill`` (1), their views released while they
        grow (:func:`grow`): their new size and views."""
        columns = (self.decode, self.prefill)[part]
        for view in self.views[part]:
            view.release()
        size = grow(columns)
        self.views[part] = tuple(map(memoryview, columns))
        return size, self.views[part]

    def array(self):
        """All rows as one array, in order of start time (an instance's iterations start one after another)."""
        parts = []  # (each a column per quantity: an array, or a number all its rows share)
        if self.rows:  # (read flat: much faster than a list of tuples)
            flat = np.fromiter(chain.from_iterable(self.rows), dtype=float, count=len(self.rows) * len(COLUMNS))
            parts.append(flat.reshape(-1, len(COLUMNS)).T)
        n_dec, n_pre = self.filled
        if n_pre:
            start, dur, tokens, prompts, prompt, used, running = (np.frombuffer(c, dtype=float)[:n_pre]
                                                                  for c in self.prefill)
            parts.append((start, dur, PREFILL, tokens, prompts, 0.0, 0.0, prompts, prompt, used, running))
        if n_dec:
            start, dur, seqs, context, used = (np.frombuffer(column, dtype=float)[:n_dec] for column in self.decode)
            parts.append((start, dur, DECODE, seqs, seqs, seqs, context, 0.0, 0.0, used, seqs))
        parts.extend(block.T for block in self.blocks)
        if not parts:
            return np.zeros((0, len(COLUMNS)))
        # the parts' columns joined, then their rows gathered in order of start, a block of rows at a time (each
        # block's columns written in cache, not each column across the whole array)
        sizes = [len(part[0]) for part in parts]
        joined = [np.concatenate([np.broadcast_to(np.asarray(part[c], dtype=float), (size,))
                                  for part, size in zip(parts, sizes, strict=True)]) for c in range(len(COLUMNS))]
        order = np.argsort(joined[0], kind="stable")
        out = np.empty((len(order), len(COLUMNS)))
        for first in range(0, len(order), _GATHER_ROWS):
            rows, block = order[first:first + _GATHER_ROWS], out[first:first + _GATHER_ROWS]
            for c, column in enumerate(joined):
                block[:, c] = column[rows]
        return out
