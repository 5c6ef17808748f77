"""Labels of points that do not overlap: points closer than a few pixels share one label, and each
label takes the nearest free place around its point (a leader line when it sits away from it).

:func:`place_labels` measures every label with an Agg renderer and tries places around its point,
nearest first, each checked against the labels already placed, the points' markers and the axes'
edges. The axes' limits and position must be final when it runs (it fixes the limits; the labels
are left out of the layout, so a later ``tight_layout`` keeps the axes where they were measured).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox

#: how far from its point a label may sit (points), nearest first, and the directions tried at each
_DISTANCES = (4, 14, 28, 48, 72, 100, 135)
_DIRECTIONS = ((1, 0.35), (1, -0.35), (0, 1), (0, -1), (-1, 0.35), (-1, -0.35), (1, 1), (1, -1), (-1, 1), (-1, -1))
_NEAR_PX = 9  # points closer than this on screen share a label
_MARKER_PX = 5  # half the size of a marker on screen
GID = "point-label"


def groups(xy: np.ndarray, near: float = _NEAR_PX) -> list[list[int]]:
    """Indices of points (display coordinates ``xy``, one row each) that lie within ``near``
    pixels of one another, transitively, in the order of their first member."""
    parent = list(range(len(xy)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(xy)):
        for j in range(i + 1, len(xy)):
            if np.hypot(*(xy[i] - xy[j])) < near:
                parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in range(len(xy)):
        members.setdefault(root(i), []).append(i)
    return list(members.values())


def _box(anchor, size, direction) -> Bbox:
    """The box of a label of ``size`` (w, h pixels) aligned at ``anchor`` away from its point in ``direction``."""
    (x, y), (w, h), (dx, dy) = anchor, size, direction
    left = x if dx > 0 else x - w if dx < 0 else x - w / 2
    bottom = y if dy > 0.5 else y - h if dy < -0.5 else y - h / 2
    return Bbox.from_bounds(left, bottom, w, h)


def _align(direction):
    dx, dy = direction
    return ("left" if dx > 0 else "right" if dx < 0 else "center",
            "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center")


def _overlap(box: Bbox, others) -> float:
    total = 0.0
    for o in others:
        w = min(box.x1, o.x1) - max(box.x0, o.x0)
        h = min(box.y1, o.y1) - max(box.y0, o.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def place_labels(ax, x, y, texts, *, fontsize: float = 6, markers=None, avoid=()) -> list:
    """Annotate the points ``(x, y)`` (data coordinates) of ``ax`` with ``texts``, one label per point,
    none overlapping another (nor a marker at ``markers``, data coordinates, default the points, nor
    the artists ``avoid``, such as the legend), inside the axes. Returns the annotations (their gid
    is :data:`GID`)."""
    fig = ax.figure
    ax.set_xlim(ax.get_xlim())  # the limits the labels are measured against stay
    ax.set_ylim(ax.get_ylim())
    renderer = RendererAgg(*(fig.get_size_inches() * fig.dpi).astype(int), fig.dpi)
    area = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([x, y]))
    marks = points if markers is None else ax.transData.transform(np.asarray(markers, dtype=float))
    taken = [Bbox.from_bounds(mx - _MARKER_PX, my - _MARKER_PX, 2 * _MARKER_PX, 2 * _MARKER_PX) for mx, my in marks]
    taken += [artist.get_window_extent(renderer) for artist in avoid if artist is not None]
    scale = fig.dpi / 72.0
    placed = []
    for (px, py), xi, yi, text in zip(points, x, y, texts, strict=True):
        probe = Text(0, 0, text, fontsize=fontsize, figure=fig)
        extent = probe.get_window_extent(renderer)
        size = (extent.width + 2, extent.height + 2)
        best = None
        for distance in _DISTANCES:
            for direction in _DIRECTIONS:
                norm = np.hypot(*direction)
                offset = (distance * direction[0] / norm, distance * direction[1] / norm)
                box = _box((px + offset[0] * scale, py + offset[1] * scale), size, direction)
                outside = box.x0 < area.x0 or box.x1 > area.x1 or box.y0 < area.y0 or box.y1 > area.y1
                cost = _overlap(box, taken) + (1e9 if outside else 0.0)
                if best is None or cost < best[0]:
                    best = (cost, offset, direction, box)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, offset, direction, box = best
        ha, va = _align(direction)
        far = np.hypot(*offset) > 6
        note = ax.annotate(text, (xi, yi), xytext=offset, textcoords="offset points",
                           fontsize=fontsize, ha=ha, va=va, gid=GID, annotation_clip=False,
                           arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.4", "shrinkA": 0, "shrinkB": 2}
                           if far else None)
        note.set_in_layout(False)
        taken.append(box)
        placed.append(note)
    return placed
