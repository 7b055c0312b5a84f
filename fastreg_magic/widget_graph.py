"""A workflow graph as an SVG picture, each node coloured by its phase. Pure: strings in, SVG out.

    graph_svg([("n0", "train"), ("n1", "report")], [("n0", "n1")], {"n0": "SUCCEEDED", "n1": "RUNNING"})

Nodes are laid out left to right in layers (a node sits one column right of the furthest
node it waits for), which is readable for the shapes notebook workflows have: chains and
fan-outs of a few dozen nodes. So that such a graph fits a notebook's width, a layer of more
than `MAX_ROWS` nodes takes several columns side by side, and a row of more than `MAX_COLUMNS`
columns wraps like text onto a band below. An edge into the next column is a curve; any other
runs along the gaps between boxes (right of its source, along the gap above its target, down
into it), so it never passes under a box. The picture scales down in a narrower output area.
Drawn by hand because the widget needs a string, not an image file: graphviz would add a
system dependency for a dozen lines of geometry.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from fastreg_magic.widget_text import esc, phase_colour

BOX_W, BOX_H = 150, 42
GAP_X, GAP_Y = 46, 16
BAND_GAP = 34  # between wrapped bands: room for the edges running into the next one
PAD = 8  # around the picture; edges in gutters need GAP_Y // 2 above the first row and GAP_X // 2 right of the last column
LABEL_CHARS = 20
MAX_COLUMNS = 5  # 5 columns are under 1000 px: a notebook's usual output width
MAX_ROWS = 6  # a layer with more nodes is drawn as several columns (taller ones past MAX_COLUMNS - 1 of them)


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
    position, band, width, height = place_nodes([n for n, _ in nodes], edges)
    parts = [
        f'<svg class="fastreg-graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto" font-family="sans-serif" font-size="12">',
        '<defs><marker id="fastreg-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#757575"/></marker></defs>',
    ]
    for u, v in edges:
        if u in position and v in position:
            parts.append(_edge(position[u], position[v], band[u] == band[v]))
    for node_id, label in nodes:
        parts.append(_node(node_id, label, phases.get(node_id, "NOT_STARTED"), position[node_id]))
    parts.append("</svg>")
    return "".join(parts)


def place_nodes(ids: list[str], edges: list[tuple[str, str]]):
    """Top-left corner of each node's box, the band (row of columns) it is in, and the picture's width and height."""
    slot_of = _slots(ids, layers(ids, edges))
    band_of = {node: slot // MAX_COLUMNS for node, (slot, _) in slot_of.items()}
    band_rows: dict[int, int] = {}
    for node, (_, row) in slot_of.items():
        band_rows[band_of[node]] = max(band_rows.get(band_of[node], 0), row + 1)
    band_top, top = {}, PAD + GAP_Y // 2
    for band in range(max(band_rows) + 1):
        band_top[band] = top
        top += band_rows.get(band, 0) * (BOX_H + GAP_Y) - GAP_Y + BAND_GAP
    position = {
        node: (PAD + (slot % MAX_COLUMNS) * (BOX_W + GAP_X), band_top[band_of[node]] + row * (BOX_H + GAP_Y))
        for node, (slot, row) in slot_of.items()
    }
    columns = min(MAX_COLUMNS, 1 + max(slot for slot, _ in slot_of.values()))
    width = PAD * 2 + columns * (BOX_W + GAP_X) - GAP_X // 2
    height = top - BAND_GAP + PAD
    return position, band_of, width, height


def _slots(ids: list[str], column: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(slot, row) of each node: its layer's columns in order, a wide layer spread over several.

    A wide layer keeps a column free beside it for what it waits for, and never straddles two bands.
    """
    members: dict[int, list[str]] = {}
    for node_id in ids:
        members.setdefault(column[node_id], []).append(node_id)
    placed, slot = {}, 0
    for layer in sorted(members):
        nodes = members[layer]
        rows = max(MAX_ROWS, -(-len(nodes) // (MAX_COLUMNS - 1)))
        wide = -(-len(nodes) // rows)
        if slot % MAX_COLUMNS + wide > MAX_COLUMNS:
            slot += MAX_COLUMNS - slot % MAX_COLUMNS  # to the start of the next band
        for i, node_id in enumerate(nodes):
            placed[node_id] = (slot + i // rows, i % rows)
        slot += wide
    return placed


def _edge(start: tuple[int, int], end: tuple[int, int], same_band: bool) -> str:
    if same_band and end[0] == start[0] + BOX_W + GAP_X:
        return _edge_across(start, end)
    return _edge_in_gutters(start, end)


def _edge_across(start: tuple[int, int], end: tuple[int, int]) -> str:
    """Into the next column: a curve from the right side of one box to the left side of the other."""
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H // 2
    x2, y2 = end[0], end[1] + BOX_H // 2
    bend = (x2 - x1) / 2
    return _path(f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 2},{y2}")


def _edge_in_gutters(start: tuple[int, int], end: tuple[int, int]) -> str:
    """Anywhere else (past other columns, into the band below): along the gaps between boxes, so it
    never runs under one; right of its source, then along the gap above its target, and down into it."""
    x1, y1 = start[0] + BOX_W, start[1] + BOX_H // 2
    gutter_x = x1 + GAP_X // 2
    gutter_y = end[1] - GAP_Y // 2
    x2 = end[0] + BOX_W // 2
    return _path(f"M{x1},{y1} H{gutter_x} V{gutter_y} H{x2} V{end[1] - 2}")


def _path(d: str) -> str:
    return (
        f'<path d="{d}" fill="none" stroke="#757575" stroke-width="1.5" stroke-linejoin="round" '
        'marker-end="url(#fastreg-arrow)"/>'
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
