"""The result arrays of the last few estimates, kept for a call with the same arguments.

An estimate is a function of its arguments and of the spec files they name, so a call with the same
arguments (keyed by :func:`~perfsim.specs.memo.frozen`: exact values and types, in the order given)
takes the result arrays the first call made while its model and hardware specs are the objects read
then (a spec file edited on disk is read again, and then the estimate is made again; a runtime
profile is read once per process). The caller nests them into a new result dict as the first call
did, so each caller gets its own. The memo holds :data:`RECALLED` calls, the oldest dropped first,
so a loop over more distinct calls than that (a batch 1..64, say) makes every estimate anew: only a
call repeated soon after is recalled.
"""

from __future__ import annotations

from perfsim.errors import InputError
from perfsim.specs.hardware import split_whatif
from perfsim.specs.memo import Memo, Unkeyable, frozen
from perfsim.specs.model import load_model

#: calls kept (a one-row result is some 300 arrays of one element)
RECALLED = 16
_RESULTS = Memo(RECALLED)
#: whether results are kept (a test that changes the cost models in place turns it off)
ON = True


def key(plan: dict):
    """The memo key of an estimate's ``plan`` (its arguments given a value); None where one cannot be keyed
    or nothing is kept (:data:`ON`)."""
    if not ON:
        return None
    try:
        return frozen(plan)
    except Unkeyable:
        return None


def _specs(plan: dict) -> tuple:
    """The model and hardware specs ``plan`` names, as read now."""
    return load_model(plan["model"]), split_whatif(plan["hardware"])[0]


def recall(key, plan: dict):
    """What :func:`keep` kept under ``key`` where its specs are the ones ``plan`` names now; else None
    (then the estimate is made, and any error it raises is its own)."""
    hit = _RESULTS.get(key)
    if hit is None:
        return None
    try:
        specs = _specs(plan)
    except InputError:  # (a spec file removed or broken since: the estimate says what is wrong)
        return None
    if any(a is not b for a, b in zip(hit[0], specs, strict=True)):
        return None
    return hit[1]


def keep(key, plan: dict, made) -> None:
    """Keep ``made`` (what the estimate of ``plan`` nests its result from, which no one changes) under
    ``key`` with the specs it was made from (read earlier in the same call:
    :func:`~perfsim.specs.paths.reading_once`)."""
    _RESULTS.put(key, (_specs(plan), made))
