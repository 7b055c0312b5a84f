"""Drawing without a kernel: the SVG graph, the HTML fragments, escaping, terminal text."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from fastreg_magic.runs_data import NodeStatus
from fastreg_magic.widget_graph import graph_svg, layers
from fastreg_magic.widget_text import (
    badge_html,
    entities_html,
    error_html,
    inputs_html,
    files_html,
    nodes_html,
    outputs_html,
    registration_header_html,
    registration_text,
    run_text,
    title_html,
)

XSS = "<img src=x onerror=alert(1)>"


def svg_nodes(svg: str) -> dict[str, dict]:
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    out = {}
    for g in root.findall("s:g", ns):
        rect = g.find("s:rect", ns)
        out[g.get("data-node")] = {
            "phase": g.get("data-phase"),
            "x": float(rect.get("x")),
            "y": float(rect.get("y")),
            "fill": rect.get("fill"),
            "label": g.findall("s:text", ns)[0].text,
        }
    return out


def test_graph_places_each_node_right_of_what_it_waits_for():
    nodes = [("n0", "load"), ("n1", "train"), ("n2", "evaluate"), ("n3", "report")]
    edges = [("n0", "n1"), ("n0", "n2"), ("n1", "n3"), ("n2", "n3")]
    svg = graph_svg(nodes, edges, {"n0": "SUCCEEDED", "n1": "RUNNING", "n2": "FAILED"})
    drawn = svg_nodes(svg)  # also proves the SVG is well-formed XML
    assert drawn["n0"]["x"] < drawn["n1"]["x"] == drawn["n2"]["x"] < drawn["n3"]["x"]
    assert drawn["n1"]["y"] != drawn["n2"]["y"]
    assert [drawn[n]["phase"] for n in ("n0", "n1", "n2", "n3")] == ["SUCCEEDED", "RUNNING", "FAILED", "NOT_STARTED"]
    fills = {drawn[n]["fill"] for n in ("n0", "n1", "n2", "n3")}
    assert len(fills) == 4  # four phases, four colours
    assert svg.count("marker-end=") == len(edges)


NOTEBOOK_WIDTH_PX = 1000  # a notebook's output area on a laptop screen


def svg_size(svg: str) -> tuple[float, float]:
    root = ET.fromstring(svg)
    return float(root.get("width")), float(root.get("height"))


def assert_boxes_apart(drawn: dict[str, dict]) -> None:
    from fastreg_magic.widget_graph import BOX_H, BOX_W

    corners = sorted((d["x"], d["y"]) for d in drawn.values())
    for i, (x, y) in enumerate(corners):
        for x2, y2 in corners[i + 1:]:
            assert abs(x - x2) >= BOX_W or abs(y - y2) >= BOX_H, f"boxes at {(x, y)} and {(x2, y2)} overlap"


@pytest.mark.parametrize(
    "shape, nodes, edges",
    [
        ("a chain of 30 steps", [f"n{i}" for i in range(30)], [(f"n{i}", f"n{i + 1}") for i in range(29)]),
        ("30 steps side by side", [f"n{i}" for i in range(30)], []),
        ("a fan-out of 30 steps", ["start", *(f"n{i}" for i in range(30)), "end"],
         [*(("start", f"n{i}") for i in range(30)), *((f"n{i}", "end") for i in range(30))]),
    ],
)
def test_a_30_node_graph_fits_a_notebooks_width_in_a_compact_picture(shape, nodes, edges):
    svg = graph_svg([(n, "step") for n in nodes], edges, {})
    width, height = svg_size(svg)
    drawn = svg_nodes(svg)
    assert width <= NOTEBOOK_WIDTH_PX, f"{shape}: {width} px wide"
    assert height <= 1000, f"{shape}: {height} px tall"
    assert all(d["x"] + 150 <= width and d["y"] + 42 <= height for d in drawn.values())
    assert_boxes_apart(drawn)
    assert "max-width:100%" in svg  # and narrower output areas scale it down
    assert svg.count("marker-end=") == len(edges)


def test_a_wrapped_chain_reads_left_to_right_then_down():
    nodes = [f"n{i}" for i in range(12)]
    drawn = svg_nodes(graph_svg([(n, n) for n in nodes], [(a, b) for a, b in zip(nodes, nodes[1:])], {}))
    for a, b in zip(nodes, nodes[1:]):
        assert drawn[b]["x"] > drawn[a]["x"] or drawn[b]["y"] > drawn[a]["y"], f"{b} is drawn before {a}"


def test_layers_handle_unknown_edges_and_isolated_nodes():
    assert layers(["a", "b", "c"], [("a", "b"), ("zz", "c")]) == {"a": 0, "b": 1, "c": 0}


def test_graph_of_nothing_is_empty():
    assert graph_svg([], [], {}) == ""


def test_long_names_are_shortened_in_the_box_but_kept_in_the_tooltip():
    name = "a_really_long_task_name_for_the_graph"
    svg = graph_svg([("n0", name)], [], {})
    assert svg_nodes(svg)["n0"]["label"].endswith("…")
    assert name in svg


@pytest.mark.parametrize("where", ["node", "label", "phase"])
def test_graph_escapes_names(where):
    node, label, phase = "n0", "t", "RUNNING"
    if where == "node":
        node = XSS
    elif where == "label":
        label = XSS
    else:
        phase = XSS
    svg = graph_svg([(node, label)], [], {node: phase})
    assert "<img" not in svg
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg
    ET.fromstring(svg)


def test_html_fragments_escape_everything_from_the_backend_or_the_user():
    rows = [NodeStatus(XSS, f"mod.{XSS}", "FAILED", None, 1.0, 2, XSS)]
    fragments = [
        nodes_html(rows),
        outputs_html({XSS: XSS, "o1": [XSS]}),
        error_html(f"Traceback (most recent call last):\n  ...\nValueError: {XSS}"),
        badge_html(XSS),
        title_html(XSS, XSS, f"https://x/{XSS}"),
    ]
    for fragment in fragments:
        assert "<img" not in fragment, fragment
        assert "&lt;img" in fragment


def test_node_table_shows_task_phase_duration_and_retries():
    rows = [
        NodeStatus("n0", "wf.load", "SUCCEEDED", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), 1.25, 0),
        NodeStatus("n1", "wf.train", "RUNNING", None, 75.0, 2),
    ]
    table = nodes_html(rows)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table)
    assert "<code>n0</code>" in cells[0] and cells[1] == "load" and "SUCCEEDED" in cells[2]
    assert cells[3] == "1.2s" or cells[3] == "1.3s"
    assert cells[8] == "1m15s" and cells[9] == "2"


def test_a_node_answered_from_the_cache_says_so():
    rows = [NodeStatus("n0", "wf.load", "SUCCEEDED", None, 0.0, cached=True), NodeStatus("n1", "wf.train", "SUCCEEDED")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", nodes_html(rows))
    assert "cached" in cells[2] and "cached" not in cells[7]
    text = run_text(fake_run(), rows).splitlines()
    assert "from the cache" in next(line for line in text if "load" in line)
    assert "from the cache" not in next(line for line in text if "train" in line)


def test_outputs_show_files_as_paths_and_urls_as_links():
    html = outputs_html({"report": "https://bucket.example/report.html", "model": "/tmp/sandbox/model.bin"})
    assert '<a href="https://bucket.example/report.html"' in html
    assert "/tmp/sandbox/model.bin" in html


def test_a_run_shows_what_it_was_launched_with():
    html = inputs_html({"n": 3, "name": XSS, "rows": list(range(1000))})
    assert "n=3" in html and "&lt;img" in html and "<img" not in html
    assert len(html) < 400  # a long value is cut short
    assert inputs_html(None) == "" and inputs_html({}) == ""  # attached runs: not known
    text = run_text(fake_run(inputs={"n": 3})).splitlines()
    assert text[1] == "  inputs: n=3"


def test_a_map_task_node_shows_the_task_it_maps():
    rows = [NodeStatus("n0", "flows.map_square_6b3bd0353da5de6e84d7982921ead2b3-arraynode", "SUCCEEDED")]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", nodes_html(rows))
    assert cells[1] == "map_task(square)"


def test_long_and_multi_line_strings_show_as_the_text_they_are():
    report = "line one\n" + "x" * 500
    html = outputs_html({"report": report, "label": "ok"})
    shown = re.search(r"<pre[^>]*>(.*?)</pre>", html, re.S).group(1)
    assert shown == report  # copied from the view, it is the value: no quotes, no escaped line breaks
    assert "overflow-wrap:anywhere" in html  # wraps instead of stretching the view sideways
    assert "<code>&#x27;ok&#x27;</code>" in html  # a short string keeps its quotes: '3' is not 3


def test_an_error_shows_its_cause_first_and_reads_in_any_theme():
    error = ("Traceback (most recent call last):\n  File \"flows.py\", line 3, in picky\n"
             "    raise ValueError('x must not be positive')\nValueError: x must not be positive\n\nUser error.")
    html = error_html(error)
    summary = re.search(r"fastreg-error-summary'>(.*?)</span>", html).group(1)
    assert summary == "ValueError: x must not be positive"
    assert html.index(summary) < html.index("Traceback")
    pre_style = re.search(r"<pre style='([^']*)'", html).group(1)
    assert "color:var(--jp-content-font-color1" in pre_style and "background:var(--jp-rendermime-error-background" in pre_style


def fake_run(**over):
    base = dict(
        name="abc123", project="flytesnacks", domain="development", label="pipe.wf", phase="SUCCEEDED",
        done=True, elapsed=3.2, url=None, outputs={"o0": 9}, error=None,
    )
    base.update(over)
    return SimpleNamespace(**base)


def test_run_text_for_terminals():
    text = run_text(fake_run(), [NodeStatus("n0", "pipe.square", "SUCCEEDED", None, 1.0, 1)])
    assert "Run abc123 (pipe.wf) in flytesnacks/development: SUCCEEDED, 3.2s" in text
    assert "o0 = 9" in text
    assert "square" in text and "retries 1" in text
    failed = run_text(fake_run(phase="FAILED", outputs=None, error="Traceback:\nValueError: boom", url="https://c/x"))
    assert "console: https://c/x" in failed and "    ValueError: boom" in failed


def fake_registration(**over):
    base = dict(
        module="pipe", version="v1abc", project="flytesnacks", domain="development",
        backend=SimpleNamespace(label=f"embedded sandbox {XSS}"), images=("ghcr.io/acme/ml:1",),
        archive_size=2048, files=("pipe.py", f"lib/{XSS}.py"),
        left_out=(SimpleNamespace(relpath=".env", reason="secret (never shipped)"),),
        lifted=("helper",), warnings=(), uploaded=True, registered=True,
        timings={"collect": 0.002, "package": 0.003, "upload": 0.01, "register": 0.02},
        entities=(SimpleNamespace(kind="workflow", name=f"pipe.{XSS}", url=None),), runs=[],
    )
    base.update(over)
    return SimpleNamespace(**base)


def test_registration_header_files_and_entities():
    reg = fake_registration()
    header = registration_header_html(reg)
    assert "2.0 KiB, 2 files" in header and "collect 2 ms" in header and "register 20 ms" in header
    files = files_html(reg)
    assert "2 files shipped" in files and ".env" in files and "secret (never shipped)" in files
    assert "lifted from earlier cells: helper" in files
    for fragment in (header, files, entities_html(reg)):
        assert "<img" not in fragment
    unchanged = registration_header_html(fake_registration(uploaded=False, registered=False))
    assert "unchanged: nothing uploaded or registered" in unchanged


def test_entities_link_to_the_console_on_real_clusters():
    url = "https://flyte.acme.dev/console/projects/p/domains/d/workflow/pipe.wf/version/v1"
    reg = fake_registration(entities=(SimpleNamespace(kind="workflow", name="pipe.wf", url=url),))
    assert f'<a href="{url}"' in entities_html(reg)


def test_registration_text_for_terminals():
    text = registration_text(fake_registration(uploaded=False, registered=False))
    assert text.startswith("Registered pipe version v1abc")
    assert "unchanged: nothing uploaded or registered" in text
    assert "left out        .env: secret (never shipped)" in text


def nested_rows():
    failing = NodeStatus("n1", "wf.picky", "FAILED", None, 0.5, 1, f"ValueError: {XSS}", path="n0/n1")
    sub = NodeStatus(
        "n0", "wf.inner", "FAILED", None, 2.0, 0,
        children=(NodeStatus("n0", "wf.inc", "SUCCEEDED", None, 0.2, path="n0/n0"), failing), path="n0",
    )
    array = NodeStatus(
        "n1", "wf.inc", "RUNNING", None, 3.0, 0, path="n1",
        children=(NodeStatus("[0]", "wf.inc", "SUCCEEDED", path="n1[0]"), NodeStatus("[1]", "wf.inc", "RUNNING", retries=2, path="n1[1]")),
    )
    launched = NodeStatus("n2", "wf.other_lp", "RUNNING", None, 1.0, path="n2", child_run=f"f{XSS}", truncated=True)
    return [sub, array, launched]


def test_node_table_indents_children_under_their_parent():
    table = nodes_html(nested_rows())
    shown = re.findall(r"<tr class='fastreg-node' data-depth='(\d)' data-path='([^']*)' data-phase='(\w+)'>(.*?)</tr>", table, re.S)
    assert [(d, p, ph) for d, p, ph, _ in shown] == [
        ("0", "n0", "FAILED"), ("1", "n0/n0", "SUCCEEDED"), ("1", "n0/n1", "FAILED"),
        ("0", "n1", "RUNNING"), ("1", "n1[0]", "SUCCEEDED"), ("1", "n1[1]", "RUNNING"),
        ("0", "n2", "RUNNING"),
    ]
    cells = {path: re.findall(r"<td([^>]*)>(.*?)</td>", body, re.S) for _, path, _, body in shown}
    assert "padding:2px 8px 2px 8px" in cells["n0"][0][0] and "padding:2px 8px 2px 24px" in cells["n0/n1"][0][0]
    failed = cells["n0/n1"]
    assert "<code>n0/n1</code>" == failed[0][1] and failed[1][1] == "picky" and ">FAILED<" in failed[2][1]
    assert "ValueError: &lt;img" in failed[2][0]  # the error as a tooltip on the badge, escaped
    assert failed[3][1] == "0.5s" and failed[4][1] == "1"
    assert cells["n1[1]"][4][1] == "2"


def test_a_launch_plan_node_names_the_run_it_started_escaped():
    table = nodes_html(nested_rows())
    assert "<img" not in table
    assert "→ run <code>f&lt;img" in table and "%flyte_watch f&lt;img" in table
    assert "deeper nodes not shown" in table


def test_run_text_indents_children():
    text = run_text(fake_run(phase="RUNNING", done=False, outputs=None), nested_rows())
    lines = text.splitlines()
    assert any(line.startswith("  n0 ") and "inner" in line for line in lines)
    assert any(line.startswith("    n0/n1 ") and "FAILED" in line and "retries 1" in line for line in lines)
    assert any(line.startswith("    n1[1] ") for line in lines)
    assert any(line.startswith("  n2 ") and f"%flyte_watch f{XSS}" in line for line in lines)
