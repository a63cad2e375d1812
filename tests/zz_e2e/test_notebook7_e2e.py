"""The annotator in Jupyter Notebook 7 (``jupyter notebook``), in a real Chromium: paint a stroke.

The notebook is the one the package writes for a project (:func:`write_annotator_notebook`, first
cell ``Annotator("<project>")``), opened under ``/notebooks/...`` and run with Run > Run All Cells.
The stroke is checked on disk from this process, so the test passes only when it went browser ->
kernel -> store. Skipped, with the reason, without chromium, playwright or the notebook package.
"""

from __future__ import annotations

import pytest

from al_annotator.jupyter_ext import write_annotator_notebook
from al_annotator.types import SliceRef

pytestmark = pytest.mark.browser


def test_notebook7_renders_the_annotator_and_a_painted_stroke_is_on_disk(notebook7, browser, e2e_tools):
    project = notebook7.root / "nb7_project"
    e2e_tools.make_phantom_project(project)
    notebook = write_annotator_notebook(project, notebook7.root)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors = e2e_tools.widget_errors(page)
    art = e2e_tools.artifacts_dir()
    try:
        e2e_tools.open_and_run_notebook7(page, notebook7, notebook.name)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=120_000)
        widget = e2e_tools.Widget(page, project)
        assert widget.ref == SliceRef("z", 8)  # the session starts in the middle of z
        e2e_tools.paint_and_check_stroke(widget, value=3, brush=5)  # the notebook's Annotator() default brush
        page.screenshot(path=str(art / "nb7_stroke.png"))
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(art / "nb7_failure.png"))
        print(notebook7.log_tail())
        raise
    finally:
        ctx.close()
