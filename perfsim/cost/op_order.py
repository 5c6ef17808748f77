"""Sums of op terms in op order: the same bits whether the ops were priced one at a time or several
at once on a stacked axis (:func:`perfsim.cost.price.price_segments`).

Floating-point addition is not associative, so a sum's bits depend on the order of its terms: every
sum here adds its terms one after another in op order, starting from +0, as a loop over the ops
would, so that an estimate (its ops stacked) equals its row of a sweep (each op on its own arrays).
"""

from __future__ import annotations

import numpy as np


def broadcast_shape(shapes):
    """The shape ``shapes`` (a set) broadcast to."""
    return next(iter(shapes)) if len(shapes) == 1 else np.broadcast_shapes(*shapes)


def _stacked(parts, count):
    """``(index, stacked)``: each key's position, and the terms in one array, key by item (and rows),
    in item order behind a row of zeros (items without a key hold 0 there)."""
    index, shapes = {}, set()
    for _, terms in parts:
        if terms.__class__ is dict:
            keys = terms
            shapes.update(getattr(value, "shape", ()) for value in terms.values())
        else:
            keys = terms[0]
            shapes.add(terms[1].shape[2:])
        for key in keys:
            if key not in index:
                index[key] = len(index)
    rows = broadcast_shape(shapes)
    stacked = np.zeros((len(index), count + 1, *rows))
    for positions, terms in parts:  # (each item's terms aligned on the rows' trailing axes)
        if terms.__class__ is dict:
            for key, value in terms.items():
                stacked[index[key], positions] = value
        else:
            keys, terms = terms
            if terms.ndim != len(rows) + 2:
                terms = terms.reshape(*terms.shape[:2], *(1,) * (len(rows) + 2 - terms.ndim), *terms.shape[2:])
            stacked[np.array([index[key] for key in keys])[:, np.newaxis], np.array(positions)] = terms
    return index, stacked


def sum_in_op_order(parts, count, segments=None):
    """Sum of every key's terms over ``count`` items in item order: ``parts`` are ``(position, terms)``
    of one item (a dict) and ``(positions, (keys, terms))`` of several, the items at 1 to ``count``
    (:func:`perfsim.cost.price._item_terms`). With ``segments`` (``(first, last)`` positions of
    consecutive runs of items), a list of such sums, one per run over its own items (each its keys only).

    The terms are accumulated along the items: ``np.add.accumulate`` adds left to right, so its last
    row is ``((0 + t1) + t2) + ...``, the sums of the op-by-op loop bit for bit. An item without a key
    holds 0 there: adding +0 leaves every running sum as it is (a sum that starts at +0 is never -0),
    NaN and inf included."""
    if segments is None:
        index, stacked = _stacked(parts, count)
        return dict(zip(index, np.add.accumulate(stacked, axis=1)[:, -1]))
    index, sums = run_sums(parts, count, segments)
    run_of = [0] * (count + 1)
    for s, (first, last) in enumerate(segments):
        run_of[first:last + 1] = [s] * (last - first + 1)
    held = [set() for _ in segments]
    for positions, terms in parts:
        for position in (positions if isinstance(positions, list) else [positions]):
            held[run_of[position]].update(terms if terms.__class__ is dict else terms[0])
    return [{key: sums[i, s] for key, i in index.items() if key in held[s]} for s in range(len(segments))]


def run_sums(parts, count, segments):
    """``(index, sums)``: ``sums[index[key], s]`` the sum of ``key`` over the items of run ``s`` of
    :func:`sum_in_op_order`, in item order (0 where none of them has it). The runs are laid side by
    side, each behind the row of zeros and padded with it to the longest."""
    index, stacked = _stacked(parts, count)
    longest = max(last - first + 1 for first, last in segments)
    runs = np.zeros((len(segments), longest + 1), dtype=np.intp)  # (position 0: the row of zeros)
    for s, (first, last) in enumerate(segments):
        runs[s, 1:last - first + 2] = np.arange(first, last + 1)
    return index, np.add.accumulate(stacked[:, runs], axis=2)[:, :, -1]


def weighted_sum(sums, weights):
    """``sums`` (key by run, and rows) weighted by ``weights`` (a number per run) and added in run
    order, ``((0 + w1 s1) + w2 s2) + ...``: :func:`perfsim.cost.price.combine` of the runs, bit for bit."""
    terms = np.zeros((sums.shape[0], sums.shape[1] + 1, *sums.shape[2:]))
    terms[:, 1:] = sums * np.asarray(weights, dtype=float).reshape(-1, *(1,) * (sums.ndim - 2))
    return np.add.accumulate(terms, axis=1)[:, -1]
