"""A task's deck (``@task(enable_deck=True)``) from a run: ``run.deck()`` reads the HTML report the task
wrote through the backend's DataProxy, as flytekit's clients do, and the run view offers a "Show deck"
control for each node that has one. The session sandbox runs the tasks, with stock flytekit writing
their decks.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_flows import register_flows  # noqa: E402

from fastreg_magic import runs  # noqa: E402
from fastreg_magic.api import EntityRef  # noqa: E402
from fastreg_magic.errors import RunError  # noqa: E402

pytestmark = pytest.mark.slow

DECKS = '''
import time

import flytekit
from flytekit import dynamic, task, workflow
from flytekit.deck.renderer import MarkdownRenderer


@task(enable_deck=True)
def report(n: int) -> int:
    flytekit.Deck("summary", MarkdownRenderer().to_html("# Totals for " + str(n) + "\\n\\nwidgets <sold> today"))
    return n * 2


@task
def plain(n: int) -> int:
    return n + 1


@task(enable_deck=True)
def slow_report(s: float) -> float:
    time.sleep(s)
    return s


@task(enable_deck=True, cache=True, cache_version="1")
def kept_report(n: int) -> int:
    flytekit.Deck("summary", "<h1>kept " + str(n) + "</h1>")
    return n


@dynamic
def fan(n: int) -> list[int]:
    return [report(n=i) for i in range(n)]


@workflow
def reported(n: int = 3) -> int:
    return plain(n=report(n=n))


@workflow
def undecked(n: int = 3) -> int:
    return plain(n=n)


@workflow
def fanned(n: int = 2) -> list[int]:
    return fan(n=n)


@workflow
def kept(n: int = 5) -> int:
    return kept_report(n=n)


@workflow
def slow(s: float = 300.0) -> float:
    return slow_report(s=s)
'''
WORKFLOWS = ("reported", "undecked", "fanned", "kept", "slow")
WAIT_S = 300


@pytest.fixture(scope="module")
def flows(remote, tmp_path_factory):
    _, module, version, mod = register_flows(remote, tmp_path_factory.mktemp("decks"), DECKS, WORKFLOWS, prefix="decks")
    return {name: EntityRef("workflow", f"{module}.{name}", version, "flytesnacks", "development", None, getattr(mod, name))
            for name in WORKFLOWS}


@pytest.fixture(scope="module")
def reported(remote, flows):
    run = runs.launch(remote, flows["reported"], {"n": 3}).wait(timeout=WAIT_S)
    assert run.phase == "SUCCEEDED", run.error
    return run


@pytest.fixture(scope="module")
def undecked(remote, flows):
    run = runs.launch(remote, flows["undecked"], {"n": 3}).wait(timeout=WAIT_S)
    assert run.phase == "SUCCEEDED", run.error
    return run


def test_run_deck_is_the_html_the_task_wrote(reported, tmp_path):
    deck = reported.deck()
    assert (deck.node, deck.task.rsplit(".", 1)[-1]) == ("n0", "report")
    assert "<h1>Totals for 3</h1>" in deck.html and "widgets &lt;sold&gt; today" in deck.html  # the custom deck
    assert "summary" in deck.tabs  # flytekit's tab for Deck("summary", ...)
    assert reported.deck("n0").html == deck.html  # by node, as run.nodes() shows it
    assert reported.deck("report").html == deck.html  # by task name
    saved = deck.save(tmp_path / "report.html")
    assert saved.read_text(encoding="utf-8") == deck.html


def test_in_jupyter_the_deck_is_framed_so_its_scripts_cannot_reach_the_notebook(reported):
    shown = reported.deck()._repr_html_()
    assert "<iframe" in shown and "sandbox='allow-scripts'" in shown and "allow-same-origin" not in shown
    # the page (and its scripts) only inside the frame's srcdoc attribute, escaped
    assert "<script" not in shown and "&lt;script" in shown
    assert "&lt;h1&gt;Totals for 3&lt;/h1&gt;" in shown


def test_in_a_terminal_the_deck_says_where_it_is_and_how_to_save_it(reported, tmp_path):
    from IPython.lib.pretty import pretty

    from fastreg_magic.widget_text import run_text

    deck = reported.deck()
    text = pretty(deck)
    assert text.startswith(f"Deck of node n0 (report) of run {reported.name}: ")
    assert "tabs: " in text and "summary" in text
    assert "the backend keeps it at /" in text and "run.deck('n0').save('report_deck.html')" in text
    saved = deck.save(tmp_path)
    assert saved == (tmp_path / "report_deck.html").resolve()
    assert f"saved to {saved}: open it in a browser" in pretty(deck)
    assert "deck: run.deck('n0')" in run_text(reported, reported.nodes())  # the run's text names it


def test_a_run_without_decks_says_how_to_enable_them(undecked, reported):
    with pytest.raises(RunError) as caught:
        undecked.deck()
    assert f"Run {undecked.name} has no deck: its task plain makes none." in str(caught.value)
    assert "@task(enable_deck=True)" in str(caught.value)
    with pytest.raises(RunError, match=r"Node n1 of run .* has no deck: its task plain makes none.*enable_deck=True"):
        reported.deck("n1")
    with pytest.raises(RunError, match=r"has no node or task 'n7'.*Its nodes are: n0, n1"):
        reported.deck("n7")


def test_a_dynamic_tasks_children_each_have_their_deck(remote, flows):
    run = runs.launch(remote, flows["fanned"], {"n": 2}).wait(timeout=WAIT_S)
    assert run.phase == "SUCCEEDED", run.error
    with pytest.raises(RunError, match=r"has decks on 2 nodes: n0/dn0 \(report\), n0/dn1 \(report\)\. Pick one"):
        run.deck()
    assert "<h1>Totals for 1</h1>" in run.deck("n0/dn1").html
    assert "<h1>Totals for 0</h1>" in run.deck("n0/dn0").html


def test_a_task_answered_from_the_cache_wrote_no_deck(remote, flows):
    first = runs.launch(remote, flows["kept"], {"n": 5}).wait(timeout=WAIT_S)
    assert "<h1>kept 5</h1>" in first.deck().html
    again = runs.launch(remote, flows["kept"], {"n": 5}).wait(timeout=WAIT_S)
    assert again.phase == "SUCCEEDED", again.error
    with pytest.raises(RunError, match=r"has no deck: node n0 \(kept_report\) was answered from the task cache, so its "
                                       r"task did not run and wrote none\..*cache_version"):
        again.deck()


def test_a_deck_of_a_task_still_running_is_not_there_yet(remote, flows):
    run = runs.launch(remote, flows["slow"], {})
    try:
        deadline = time.monotonic() + WAIT_S
        while not any(row.phase == "RUNNING" for row in run.nodes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(RunError, match=r"has no deck yet: node n0 \(slow_report\) has not finished \(RUNNING\)"
                                           r".*run\.wait\(\), then run\.deck\(\) again"):
            run.deck()
    finally:
        run.terminate()


def test_a_backend_without_deck_links_is_read_from_where_it_keeps_the_deck(reported, monkeypatch):
    """A DataProxy that does not serve decks (UNIMPLEMENTED): the deck is read from ``deck_uri`` itself."""
    import grpc
    from flytekit.clients.raw import RawSynchronousFlyteClient

    class Unimplemented(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNIMPLEMENTED

        def details(self):
            return "CreateDownloadLink is not implemented"

    asked = []

    def no_links(client, request):
        asked.append(request.node_execution_id.node_id)
        raise Unimplemented()

    monkeypatch.setattr(RawSynchronousFlyteClient, "create_download_link", no_links)
    deck = reported.deck()
    assert asked == ["n0"] and "<h1>Totals for 3</h1>" in deck.html


def wait_for(check, what: str):
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"the view did not show {what}")
        time.sleep(0.05)


def test_the_run_view_offers_the_deck_of_the_node_that_has_one(reported):
    from fastreg_magic.widget_run import RunView

    view = RunView(reported)
    try:
        wait_for(lambda: view.decks.choice.options, "the deck control")
        assert [label for label, _ in view.decks.choice.options] == ["n0 · report"]  # not n1: plain has none
        assert view.decks.picker.layout.display == "flex"
        view.decks.show_button.click()
        wait_for(lambda: "iframe" in view.decks.frame.value, "the deck")
        shown = view.decks.frame.value
        assert "sandbox='allow-scripts'" in shown and "&lt;h1&gt;Totals for 3&lt;/h1&gt;" in shown
        assert view.decks.hide_button.layout.display == ""
        view.decks.hide_button.click()
        assert view.decks.frame.value == ""
    finally:
        view.close()


def test_the_run_view_of_a_run_without_decks_shows_no_deck_control(undecked):
    from fastreg_magic.widget_run import RunView

    view = RunView(undecked)
    try:
        wait_for(lambda: "fastreg-node" in view.node_table.value, "the node table")
        wait_for(lambda: view.phase == "SUCCEEDED", "the run's end")
        assert view.decks.choice.options == () and view.decks.picker.layout.display == "none"
    finally:
        view.close()
