"""Reading one configuration out of the result arrays (for messages that carry its numbers)."""

from __future__ import annotations

import numpy as np


def value_at(value, i) -> float:
    """``value`` at row ``i``: a scalar, a 1-D array indexed by a row number, or an array laid out
    as a box of the design space indexed by coordinates (a dimension of size 1 broadcasts)."""
    value = np.asarray(value)
    if value.ndim and isinstance(i, tuple):
        i = tuple(j if size > 1 else 0 for j, size in zip(i, value.shape, strict=True))
    return float(value if value.ndim == 0 else value[i])
