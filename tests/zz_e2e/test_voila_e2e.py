"""The annotator served by Voila, in a real Chromium: the page renders it and a stroke reaches disk.

``voila`` (its own app, serving a directory) executes the notebook the package writes for a project
(:func:`write_annotator_notebook`) when the page is requested and shows only the outputs: no
"run" step. The stroke is checked on disk from this process. Skipped, with the reason, without
chromium, playwright or voila.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_voila_renders_the_annotator_and_a_painted_stroke_is_on_disk(voila_server, browser, e2e_tools):
    def open_page(page, name):  # voila runs the notebook itself when the page is requested
        page.goto(voila_server.notebook_url(name), timeout=120_000)

    e2e_tools.paint_in_served_notebook(voila_server, browser, "voila", open_page, value=2)
