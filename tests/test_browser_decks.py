"""A task's deck in a real browser: JupyterLab 4 on loopback, driven by headless Chromium.

A cell registers a workflow whose task makes a deck (``@task(enable_deck=True)``, a custom
``flytekit.Deck``); the user presses Launch, then the run view's "Show deck", and reads the deck in
the view: its tabs work (the deck's own scripts run), and a script in the deck that reaches for the
notebook's page is kept inside its frame. The server, browser and page come from ``test_browser``.
"""

from __future__ import annotations

import nbformat
import pytest

from conftest import have_chromium
from test_browser import (  # noqa: F401  (browser, lab and page are fixtures used here)
    RUN_FINISH_TIMEOUT_MS,
    browser,
    cell_errors,
    lab,
    open_notebook,
    page,
    run_all_cells,
    save_and_read_back,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not have_chromium(), reason="Debian's chromium is not installed (python3 .ci/dev.py test installs it)"),
]

DECK_CELL = '''%%flyte_fast -m deck_report
import flytekit
from flytekit import task, workflow

PROBE = """<p id="probe">the deck's script did not run</p>
<script>
  var probe = document.getElementById("probe");
  try {
    window.parent.document.body.setAttribute("data-deck-touched", "yes");
    probe.textContent = "the deck reached the notebook";
  } catch (err) {
    probe.textContent = "the deck stayed in its frame";
  }
</script>"""

@task(enable_deck=True)
def report(n: int) -> int:
    flytekit.Deck("summary", "<h2>Quarterly totals: " + str(n * 7) + " widgets</h2>" + PROBE)
    return n * 7

@task
def plain(n: int) -> int:
    return n + 1

@workflow
def reported(n: int = 6) -> int:
    return plain(n=report(n=n))
'''


def test_the_run_views_show_deck_control_shows_the_deck_in_a_sandboxed_frame(lab, page, artifacts_dir):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("%load_ext fastreg_magic"), nbformat.v4.new_code_cell(DECK_CELL)]
    nbformat.write(nb, lab.root / "decks.ipynb")
    open_notebook(page, lab, "decks.ipynb")
    run_all_cells(page)

    registration = page.locator(".fastreg-registration").first
    registration.get_by_role("button", name="Launch", exact=True).first.click()
    run = registration.locator(".fastreg-run").first
    run.locator(".fastreg-phase").first.and_(page.locator("[data-phase='SUCCEEDED']")).wait_for(timeout=RUN_FINISH_TIMEOUT_MS)

    decks = run.locator(".fastreg-decks")
    show = decks.get_by_role("button", name="Show deck", exact=True)
    show.wait_for(timeout=60_000)
    # only the node whose task makes a deck is offered
    offered = [text.replace("\xa0", " ") for text in decks.locator("select option").all_inner_texts()]
    assert offered == ["n0 · report"]
    show.click()

    frame = page.frame_locator(".fastreg-deck-frame")
    frame.get_by_text("summary", exact=True).click()  # flytekit's tab: the deck's own script switches to it
    frame.get_by_text("Quarterly totals: 42 widgets").wait_for(timeout=30_000)
    frame.get_by_text("the deck stayed in its frame").wait_for(timeout=30_000)
    assert page.locator("body[data-deck-touched]").count() == 0
    assert page.locator(".fastreg-deck-frame").get_attribute("sandbox") == "allow-scripts"
    run.scroll_into_view_if_needed()
    run.screenshot(path=str(artifacts_dir / "deck_in_run_view.png"))

    decks.get_by_role("button", name="Hide deck", exact=True).click()
    page.locator(".fastreg-deck-frame").wait_for(state="detached", timeout=30_000)

    saved = save_and_read_back(page, lab, "decks.ipynb")
    assert cell_errors(saved) == []
