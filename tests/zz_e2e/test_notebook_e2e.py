"""What an expert does in JupyterLab, in a real Chromium: paint, undo, follow a suggestion.

One JupyterLab and one notebook for the module: the notebook creates a small phantom project and
shows ``Annotator(...)``. Labels are checked on disk from this process (``open_project``), so a
test passes only when the stroke went browser -> kernel -> store. Timeouts are generous (a loaded
2-core CI machine); nothing here asserts a duration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from al_annotator.types import SliceRef

pytestmark = pytest.mark.browser

CLASSES = ("background", "bone", "implant", "degradation")
NOTEBOOK = "annotate.ipynb"


def _cells(project: Path) -> list[str]:
    return [
        "from al_annotator import Annotator, make_phantom\n"
        "from al_annotator.store import create_project\n"
        f"ph = make_phantom((16, 64, 64), seed=3)\n"
        f"create_project({str(project)!r}, ph.image, classes={CLASSES!r}).close()",
        f"w = Annotator({str(project)!r}, brush_size=3, canvas_size=512)\nw",
    ]


@pytest.fixture(scope="module")
def widget(lab, browser, e2e_tools):
    artifacts_dir = e2e_tools.artifacts_dir
    project = lab.root / "e2e_project"
    e2e_tools.write_notebook(lab.root / NOTEBOOK, _cells(project))
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and "al-annotator" in m.text.lower() and errors.append(m.text))
    try:
        e2e_tools.open_and_run(page, lab, NOTEBOOK)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=120_000)
        w = e2e_tools.Widget(page, project)
        w.errors = errors
        w.artifacts = artifacts_dir()
        yield w
    except Exception:
        page.screenshot(path=str(artifacts_dir() / "e2e_failure.png"))
        print(lab.log_tail())
        raise
    finally:
        try:
            page.screenshot(path=str(artifacts_dir() / "e2e_final.png"))
        finally:
            ctx.close()


def test_a_painted_stroke_is_on_disk_at_the_right_voxels(widget, e2e_tools):
    ref = widget.ref
    assert ref == SliceRef("z", 8)  # the session starts in the middle of z
    widget.canvas.click(position={"x": 2, "y": 2}, button="right")  # focus the widget without painting
    widget.page.keyboard.press("3")  # class 3 = implant
    e2e_tools.wait_until(lambda: widget.data("active-class") == "3", 30, "the 3 key to pick class 3")

    widget.drag(20, 10, 40)
    def painted():
        labels = e2e_tools.disk_labels(widget.project, ref)
        return [labels] if labels.any() else None

    (lab,) = e2e_tools.wait_until(painted, what="the stroke on disk")
    rows, cols = np.nonzero(lab)
    assert set(np.unique(lab[rows, cols]).tolist()) == {3}
    assert (lab[20, 10:41] == 3).all()  # the pixels under the mouse path
    # nothing outside the brush (diameter 3) around the segment; allow 1 px for integer mouse positions
    dist = np.hypot(np.clip(cols + 0.5, 10.5, 40.5) - (cols + 0.5), rows + 0.5 - 20.5)
    assert dist.max() <= 1.5 + 1.0, (rows, cols)
    assert e2e_tools.disk_labels(widget.project, SliceRef("z", 7)).max() == 0
    widget.page.screenshot(path=str(widget.artifacts / "e2e_stroke.png"))
    # the kernel's authoritative labels came back: nothing is pending in the browser
    e2e_tools.wait_until(lambda: widget.data("pending") == "0", 30, "the browser to drop its pending stroke")


def test_undo_and_redo_from_the_keyboard_and_the_button(widget, e2e_tools):
    ref = widget.ref
    if not e2e_tools.disk_labels(widget.project, ref).any():
        widget.drag(30, 5, 25)
        e2e_tools.wait_until(lambda: e2e_tools.disk_labels(widget.project, ref).any(), what="a stroke to undo")
    painted = e2e_tools.disk_labels(widget.project, ref)
    widget.page.keyboard.press("Control+z")
    e2e_tools.wait_until(lambda: not e2e_tools.disk_labels(widget.project, ref).any(), what="Ctrl+Z to remove the stroke")
    widget.page.keyboard.press("Control+y")
    e2e_tools.wait_until(lambda: np.array_equal(e2e_tools.disk_labels(widget.project, ref), painted), what="Ctrl+Y to restore it")
    widget.root.locator("button.al-undo").click()
    e2e_tools.wait_until(lambda: not e2e_tools.disk_labels(widget.project, ref).any(), what="the Undo button to remove it")


def test_suggestions_render_and_next_moves_to_the_first(widget, e2e_tools):
    items = widget.root.locator(".al-sugg")
    e2e_tools.wait_until(lambda: items.count() >= 3, 60, "the suggestion list")
    first = items.first
    axis, index = first.get_attribute("data-axis"), int(first.get_attribute("data-index"))
    e2e_tools.wait_until(lambda: widget.page.evaluate(
        "() => [...document.querySelectorAll('.al-sugg canvas.al-thumb')].some(c => c.width > 1)"), 60, "thumbnails")
    widget.root.locator("button.al-next").click()
    e2e_tools.wait_until(lambda: widget.ref == SliceRef(axis, index), what=f"Next to show {axis}={index}")
    # the slider and the list follow
    assert widget.root.locator(".al-axis.al-on").get_attribute("data-axis") == axis
    assert "al-current" in (first.get_attribute("class") or "")
    widget.page.wait_for_timeout(300)
    widget.root.screenshot(path=str(widget.artifacts / "e2e_widget.png"))
    assert not widget.errors, widget.errors


def test_a_bad_request_shows_an_error_in_the_widget(widget, e2e_tools):
    # class 9 does not exist: the kernel refuses the stroke and the widget says so
    before = e2e_tools.disk_labels(widget.project, widget.ref).copy()
    widget.page.evaluate("""() => { const m = globalThis.__alAnnotator.widgets.at(-1); m.sendRaw({type: 'stroke', seq: 999,
        tool: 'brush', value: 9, axis: m.st.axis, index: m.st.index}, [new Uint32Array([1, 2, 3]).buffer]); }""")
    msg = widget.root.locator(".al-msg.al-error")
    msg.wait_for(state="visible", timeout=30_000)
    assert "class value 9" in msg.inner_text()
    assert np.array_equal(e2e_tools.disk_labels(widget.project, widget.ref), before)


def _show_z(widget, e2e_tools, index: int) -> None:
    """Move the widget to z slice ``index`` (one nobody painted) and wait until it is drawn."""
    widget.page.evaluate(f"() => globalThis.__alAnnotator.widgets.at(-1).navigate('z', {index})")
    e2e_tools.wait_until(lambda: widget.ref == SliceRef("z", index), 60, f"z = {index} to be shown")
    assert not e2e_tools.disk_labels(widget.project, widget.ref).any()


def _distance_to_path(rows, cols, path) -> np.ndarray:
    """Distance of each pixel centre to a polyline of (row, col) pixel centres."""
    p = np.stack([rows + 0.5, cols + 0.5], axis=1)
    best = np.full(len(p), np.inf)
    for (r0, c0), (r1, c1) in zip(path, path[1:]):
        a, b = np.array([r0 + 0.5, c0 + 0.5]), np.array([r1 + 0.5, c1 + 0.5])
        u = np.clip(((p - a) @ (b - a)) / max((b - a) @ (b - a), 1e-9), 0, 1)
        best = np.minimum(best, np.hypot(*(a + u[:, None] * (b - a) - p).T))
    return best


def test_a_touch_stroke_lands_on_disk_at_the_right_voxels(widget, e2e_tools):
    """A finger drags an L (right, then down): trusted touch input from Chromium's DevTools protocol,
    which the page sees as pointer events of type "touch"; the corner shows that the moves, not only
    the ends, are painted."""
    _show_z(widget, e2e_tools, 4)
    ref, page = widget.ref, widget.page
    widget.canvas.click(position={"x": 2, "y": 2}, button="right")  # focus the widget without painting
    page.keyboard.press("1")  # class 1 = background
    e2e_tools.wait_until(lambda: widget.data("active-class") == "1", 30, "the 1 key to pick class 1")
    page.evaluate("""() => { const c = document.querySelector('.al-annotator canvas.al-canvas'); window.__alPointerTypes = [];
        c.addEventListener('pointerdown', (e) => window.__alPointerTypes.push(e.pointerType)); }""")
    path = [(40, 8), (40, 40), (56, 40)]
    cdp = page.context.new_cdp_session(page)
    touch = lambda kind, pts: cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": pts})  # noqa: E731
    x, y = widget.page_xy(*path[0])
    touch("touchStart", [{"x": x, "y": y, "id": 1}])
    for (r0, c0), (r1, c1) in zip(path, path[1:]):
        for i in range(1, 21):
            x, y = widget.page_xy(r0 + (r1 - r0) * i / 20, c0 + (c1 - c0) * i / 20)
            touch("touchMove", [{"x": x, "y": y, "id": 1}])
    touch("touchEnd", [])
    cdp.detach()
    assert page.evaluate("() => window.__alPointerTypes") == ["touch"]

    def painted():
        labels = e2e_tools.disk_labels(widget.project, ref)
        return [labels] if labels.any() else None

    (lab,) = e2e_tools.wait_until(painted, what="the touch stroke on disk")
    rows, cols = np.nonzero(lab)
    assert set(np.unique(lab[rows, cols]).tolist()) == {1}
    assert (lab[40, 8:41] == 1).all() and (lab[40:57, 40] == 1).all(), (rows, cols)  # both legs of the L
    assert _distance_to_path(rows, cols, path).max() <= 1.5 + 1.0, (rows, cols)  # brush 3; 1 px for rounding
    assert not lab[50, 20:30].any()  # a stroke straight from start to end would cross here
    e2e_tools.wait_until(lambda: widget.data("pending") == "0", 30, "the browser to drop its pending stroke")
    assert not widget.errors, widget.errors


def test_the_canvas_follows_the_cell_width_and_paints_right_at_any_size(widget, e2e_tools):
    page, canvas = widget.page, widget.canvas
    css_width = lambda: canvas.evaluate("c => c.getBoundingClientRect().width")  # noqa: E731
    backing = lambda: canvas.evaluate("c => [c.width, Math.round(c.getBoundingClientRect().width * devicePixelRatio)]")  # noqa: E731
    wide = css_width()
    assert wide == 512  # the cell has room: canvas_size=512 is the most it takes
    try:
        page.set_viewport_size({"width": 700, "height": 1000})
        narrow = e2e_tools.wait_until(lambda: (w := css_width()) < wide - 50 and w, 30, "the canvas to shrink with the cell")
        box = canvas.bounding_box()
        assert box["height"] == box["width"] and box["x"] + box["width"] <= 700  # square, inside the page
        assert backing()[0] == backing()[1]  # redrawn at the new size (one canvas pixel per device pixel)
        _show_z(widget, e2e_tools, 12)
        e2e_tools.paint_and_check_stroke(widget, value=2, row=30, c0=6, c1=50, brush=3)
        page.screenshot(path=str(widget.artifacts / "e2e_narrow.png"))
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
    e2e_tools.wait_until(lambda: css_width() == wide, 30, f"the canvas to grow back from {narrow} px")
    assert backing()[0] == backing()[1]
    assert not widget.errors, widget.errors
