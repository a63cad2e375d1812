"""The annotator served by Voila, in a real Chromium: the page renders it and a stroke reaches disk.

``voila`` (its own app, serving a directory) executes the notebook the package writes for a project
(:func:`write_annotator_notebook`) when the page is requested and shows only the outputs: no
"run" step. The stroke is checked on disk from this process. Skipped, with the reason, without
chromium, playwright or voila.
"""

from __future__ import annotations

import pytest

from al_annotator.jupyter_ext import write_annotator_notebook
from al_annotator.types import SliceRef

pytestmark = pytest.mark.browser


def test_voila_renders_the_annotator_and_a_painted_stroke_is_on_disk(voila_server, browser, e2e_tools):
    project = voila_server.root / "voila_project"
    e2e_tools.make_phantom_project(project)
    notebook = write_annotator_notebook(project, voila_server.root)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors = e2e_tools.widget_errors(page)
    art = e2e_tools.artifacts_dir()
    try:
        page.goto(voila_server.notebook_url(notebook.name), timeout=120_000)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=120_000)
        widget = e2e_tools.Widget(page, project)
        assert widget.ref == SliceRef("z", 8)
        e2e_tools.paint_and_check_stroke(widget, value=2, brush=5)
        page.screenshot(path=str(art / "voila_stroke.png"))
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(art / "voila_failure.png"))
        print(voila_server.log_tail())
        raise
    finally:
        ctx.close()
