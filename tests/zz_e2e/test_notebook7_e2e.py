"""The annotator in Jupyter Notebook 7 (``jupyter notebook``), in a real Chromium: paint a stroke.

The notebook is the one the package writes for a project (:func:`write_annotator_notebook`, first
cell ``Annotator("<project>")``), opened under ``/notebooks/...`` and run with Run > Run All Cells.
The stroke is checked on disk from this process, so the test passes only when it went browser ->
kernel -> store. Skipped, with the reason, without chromium, playwright or the notebook package.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_notebook7_renders_the_annotator_and_a_painted_stroke_is_on_disk(notebook7, browser, e2e_tools):
    def open_page(page, name):
        e2e_tools.open_and_run_notebook7(page, notebook7, name)

    e2e_tools.paint_in_served_notebook(notebook7, browser, "nb7", open_page, value=3)
