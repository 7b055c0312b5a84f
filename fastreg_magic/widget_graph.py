"""A workflow graph as an SVG picture, each node coloured by its phase. Pure: strings in, SVG out.

    graph_svg([("n0", "train"), ("n1", "report")], [("n0", "n1")], {"n0": "SUCCEEDED", "n1": "RUNNING"})

Nodes are laid out left to right in layers (a node sits one column right of the furthest
node it waits for), which is readable for the shapes notebook workflows have: chains and
fan-outs of a few dozen nodes. Drawn by hand because the widget needs a string, not an
image file: graphviz would add a system dependency for a dozen lines of geometry.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from fastreg_magic.widget_text import esc, phase_colour

BOX_W, BOX_H = 150, 42
GAP_X, GAP_Y = 46, 16
PAD = 8
LABEL_CHARS = 20


def layers(node_ids: list[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Column of each node: 0 for nodes that wait for nothing, else one past their furthest upstream."""
    upstream: dict[str, list[str]] = {n: [] for n in node_ids}
    for u, v in edges:
        if u in upstream and v in upstream:
            upstream[v].append(u)
    column: dict[str, int] = {}

    def place(node: str, visiting: frozenset) -> int:
        if node in column:
            return column[node]
        if node in visiting:  # a cycle cannot come from Flyte's compiler; draw it flat rather than recurse
            return 0
        col = 1 + max((place(u, visiting | {node}) for u in upstream[node]), default=-1)
        column[node] = col
        return col

    for node in node_ids:
        place(node, frozenset())
    return column


def graph_svg(
    nodes: Iterable[tuple[str, str | None]],
    edges: Iterable[tuple[str, str]],
    phases: Mapping[str, str],
) -> str:
    """SVG for ``nodes`` ((id, label) pairs), ``edges`` ((from, to) ids) and each node's phase."""
    nodes = list(nodes)
    edges = [(u, v) for u, v in edges]
    if not nodes:
        return ""
    ids = [n for n, _ in nodes]
    column = layers(ids, edges)
    rows: dict[int, int] = {}
    position = {}
    for node_id in ids:
        col = column[node_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        position[node_id] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(column.values()) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values()) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="fastreg-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<defs><marker id="fastreg-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#757575"/></marker></defs>',
    ]
    for u, v in edges:
        if u in position and v in position:
            parts.append(_edge(position[u], position[v]))
    for node_id, label in nodes:
        parts.append(_node(node_id, label, phases.get(node_id, "NOT_STARTED"), position[node_id]))
    parts.append("</svg>")
    return "".join(parts)


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H // 2
    x2, y2 = end[0], end[1] + BOX_H // 2
    bend = (x2 - x1) / 2
    return (
        f'<path d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 2},{y2}" fill="none" stroke="#757575" '
        'stroke-width="1.5" marker-end="url(#fastreg-arrow)"/>'
    )


def _node(node_id: str, label: str | None, phase: str, at: tuple[int, int]) -> str:
    x, y = at
    text = label or node_id
    shown = text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"
    return (
        f'<g class="fastreg-node" data-node="{esc(node_id)}" data-phase="{esc(phase)}">'
        f"<title>{esc(node_id)}: {esc(text)} ({esc(phase)})</title>"
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{phase_colour(phase)}"/>'
        f'<text x="{x + BOX_W // 2}" y="{y + 17}" text-anchor="middle" fill="white" font-weight="600">{esc(shown)}</text>'
        f'<text x="{x + BOX_W // 2}" y="{y + 33}" text-anchor="middle" fill="white" font-size="10">'
        f"{esc(node_id)} · {esc(phase.lower().replace('_', ' '))}</text></g>"
    )
