"""Tier 1 live in a real Chromium: two painted classes, and the instant classifier's prediction is drawn.

One JupyterLab and one notebook with ``Annotator(project, live_preview=True)`` on a small phantom.
The test paints one stroke of each of two classes with the mouse and waits (with a timeout, never
on a duration) until the page shows a prediction made from both: the tile's prediction holds both
classes, the prediction overlay was switched on by the first served prediction, the canvas pixels
away from the strokes changed, and the served line names the instant classifier. The page's
prediction is checked against the same fit made in this process from the labels on disk.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.browser

NOTEBOOK = "live.ipynb"

CANVAS_SUM = """(c) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0;
    for (let i = 0; i < d.length; i += 4) s += d[i] * 3 + d[i + 1] * 5 + d[i + 2] * 7; return s; }"""
TILE = """() => { const t = globalThis.__alAnnotator.widgets.at(-1).st.tile;
    return t && t.pred ? {h: t.h, w: t.w, step: t.step, pred: Array.from(t.pred), tier: t.tier, seq: t.labelsSeq} : null; }"""


def test_two_painted_classes_draw_the_instant_prediction(lab, browser, e2e_tools):
    pytest.importorskip("sklearn")
    project = lab.root / "live_project"
    e2e_tools.make_phantom_project(project)
    e2e_tools.write_notebook(lab.root / NOTEBOOK, [
        f"from al_annotator import Annotator\nw = Annotator({str(project)!r}, brush_size=3, live_preview=True)\nw"])
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors = e2e_tools.widget_errors(page)
    art = e2e_tools.artifacts_dir()
    try:
        e2e_tools.open_and_run(page, lab, NOTEBOOK)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=120_000)
        widget = e2e_tools.Widget(page, project)
        served = widget.root.locator(".al-served")
        e2e_tools.wait_until(lambda: "paint two classes" in served.inner_text(), 30, "the served line before any label")
        assert widget.data("served") == "none" and not widget.root.locator("input[data-trait='show_prediction']").is_checked()
        before = widget.canvas.evaluate(CANVAS_SUM)
        ref = widget.ref

        widget.canvas.click(position={"x": 2, "y": 2}, button="right")  # focus without painting
        for value, row in ((2, 20), (1, 50)):
            page.keyboard.press(str(value))
            e2e_tools.wait_until(lambda: widget.data("active-class") == str(value), 30, f"class {value} picked")
            widget.drag(row, 8, 40)
        e2e_tools.wait_until(lambda: widget.data("pending") == "0", 60, "both strokes acknowledged")
        on_disk = e2e_tools.disk_labels(project, ref)
        assert set(np.unique(on_disk).tolist()) == {0, 1, 2}

        def drawn():
            t = page.evaluate(TILE)
            return t if t and t["tier"] == "instant" and {1, 2} <= set(t["pred"]) else None

        tile = e2e_tools.wait_until(drawn, 120, "the instant prediction of both classes in the page")
        assert widget.data("overlay-tier") == "instant" and int(widget.data("overlays")) >= 1
        e2e_tools.wait_until(lambda: widget.root.locator("input[data-trait='show_prediction']").is_checked(), 30,
                             "the first served prediction to switch the overlay on")
        e2e_tools.wait_until(lambda: served.inner_text().startswith("serving: instant classifier"), 30, "the served line")
        assert widget.data("served") == "instant"
        e2e_tools.wait_until(lambda: widget.canvas.evaluate(CANVAS_SUM) != before, 30, "the overlay drawn on the canvas")
        page.screenshot(path=str(art / "e2e_live_preview.png"))

        # the page shows the fit of the labels on disk: the same classifier, fitted here, predicts the same plane
        from al_annotator.core import Session

        tile = e2e_tools.wait_until(lambda: (t := drawn()) and t["seq"] is not None and t, 60, "the tile's labels seq")
        here = Session.open(project, read_only=True, live_preview=True)
        try:
            here.goto(ref)
            here.request_preview(ref)
            here.wait_preview(120)
            mine = here.preview(ref).prediction
        finally:
            here.close()
        page_pred = np.asarray(tile["pred"], np.uint8).reshape(tile["h"], tile["w"])
        step = tile["step"]
        assert (page_pred == mine[::step, ::step][: tile["h"], : tile["w"]]).mean() > 0.99
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(art / "e2e_live_failure.png"))
        print(lab.log_tail())
        raise
    finally:
        ctx.close()

