"""A large slice zoomed out in a real Chromium: the kernel reads the image from the store's pyramid,
a stroke painted at that zoom lands at the right full-resolution voxels, and zooming in reads the
full image again. A (10, 2048, 2048) project in a 512 px canvas: the fitted view is 1:4 (level 2).
Nothing here asserts a duration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from al_annotator.types import SliceRef

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~50 s here: its own JupyterLab and an 80 MiB project

SHAPE = (10, 2048, 2048)  # the z chunk slab (10 x 2048^2 uint16, 80 MiB) is too large to keep: the tiled path
NOTEBOOK = "pyramid.ipynb"


def _project(path: Path) -> None:
    from al_annotator.store import create_project

    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 30000, SHAPE[2], dtype=np.float32)[None, None, :]
    image = (ramp + rng.integers(0, 8000, SHAPE, dtype=np.uint16)).astype(np.uint16)
    create_project(str(path), image, classes=("background", "bone", "implant")).close()


@pytest.fixture(scope="module")
def widget(lab, browser, e2e_tools):
    project = lab.root / "pyramid_project"
    _project(project)
    e2e_tools.write_notebook(lab.root / NOTEBOOK, [
        "from al_annotator import Annotator\n"
        f"w = Annotator({str(project)!r}, brush_size=9, canvas_size=512)\nw",
    ])
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors = e2e_tools.widget_errors(page)
    art = e2e_tools.artifacts_dir()
    try:
        e2e_tools.open_and_run(page, lab, NOTEBOOK)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=180_000)
        w = e2e_tools.Widget(page, project, width=SHAPE[2])
        w.errors = errors
        yield w
    except Exception:
        page.screenshot(path=str(art / "pyramid_failure.png"))
        print(lab.log_tail())
        raise
    finally:
        try:
            page.screenshot(path=str(art / "pyramid_final.png"))
        finally:
            ctx.close()


def test_zoomed_out_large_slice_reads_a_coarse_level_and_a_stroke_lands_at_full_resolution(widget, e2e_tools):
    wait = e2e_tools.wait_until
    assert widget.ref == SliceRef("z", 5)
    # fitted: 2048 slice pixels in 512 CSS pixels, so the view asks for step 4 and the kernel reads level 2
    wait(lambda: widget.data("step") == "4" and widget.data("level") == "2", 120, "the 1:4 overview from level 2")
    assert "pyramid level 2" in widget.root.locator(".al-status").first.text_content()

    widget.canvas.click(position={"x": 2, "y": 2}, button="right")  # focus without painting
    widget.page.keyboard.press("2")
    wait(lambda: widget.data("active-class") == "2", 30, "the 2 key to pick class 2")
    row, c0, c1 = 800, 400, 1200
    widget.drag(row, c0, c1, steps=40)

    def painted():
        labels = e2e_tools.disk_labels(widget.project, SliceRef("z", 5))
        return [labels] if labels.any() else None

    (lab,) = wait(painted, 120, "the stroke on disk")
    rows, cols = np.nonzero(lab)
    assert set(np.unique(lab[rows, cols]).tolist()) == {2}
    # one screen pixel is 4 voxels here: the stroke is where the mouse went, to within a screen pixel
    # plus the brush radius (4.5 voxels), in full-resolution voxels
    assert abs(rows.min() - row) <= 9 and abs(rows.max() - row) <= 9, (rows.min(), rows.max())
    assert abs(cols.min() - c0) <= 9 and abs(cols.max() - c1) <= 9, (cols.min(), cols.max())
    assert (lab[row - 4 : row + 5, c0 + 8 : c1 - 8] == 2).any(axis=0).all()  # unbroken along the path
    assert int((lab == 2).sum()) > (c1 - c0) * 4  # a brush 9 voxels wide, not one sample every 4th voxel
    for other in (4, 6):
        assert not e2e_tools.disk_labels(widget.project, SliceRef("z", other)).any()
    wait(lambda: widget.data("pending") == "0", 60, "the browser to drop its pending stroke")

    # zoomed in (4x, about the canvas centre): the kernel reads the full image again
    box = widget.canvas.bounding_box()
    widget.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    widget.page.mouse.wheel(0, -1000)
    wait(lambda: widget.data("step") == "1" and widget.data("level") == "0", 120, "the full-resolution tile")
    assert not widget.errors, widget.errors
