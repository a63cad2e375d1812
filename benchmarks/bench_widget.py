"""Notebook widget latency, in a real JupyterLab + headless Chromium (Playwright), and kernel
responsiveness while the trainer trains.

Measured:

* **paint**: mouse move -> stroke segment painted on the canvas, in the page
  (``performance.now()`` around the widget's mousemove handler: footprint, labels tile, composite,
  draw), 5 strokes x 40 moves at ~60 Hz, on a 512^2 and a 2048^2 slice;
* **stroke on disk**: Playwright's ``mouse.up()`` -> the stroke is in ``edits.log`` on disk
  (this process polls the file every ms; the log is fsync'ed in the same call), and mouse-up ->
  the kernel's ack back in the page;
* **slice switch**: request -> new slice drawn (in the page), stepping z with the arrow key, at
  512^2 and 2048^2 (the whole slice shown, 2048^2 downsampled 1:4 in the kernel);
* **window/level**: a right-drag step -> image redrawn (in the page; no kernel round trip);
* **transfer choice**: kernel time to prepare the shown tile as raw uint16 codes (what is sent)
  vs uint8 after window/level;
* **kernel responsiveness while training**: lateness of a 10 ms asyncio timer in the kernel (the
  widget's 0.5 s poll runs on the same loop) before the trainer starts and while it trains a round;
* **live preview** (``--only live``, its own section ``bench_widget_live``): with
  ``Annotator(live_preview=True)``, mouse-up of a stroke -> the instant classifier's prediction made
  from it drawn in the page (``performance.now()`` at pointer-up; the page matches the ``overlays``
  message's ``labels_seq`` with the stroke's acknowledged edit seq and forces the raster), strokes
  alternating two classes, each after the previous one's overlay, on a 512^2 (and ``--live-sizes
  512,2048``: a 2048^2) phantom slice; and tier 1's own fit / plane timings from the kernel.

Usage::

    python benchmarks/bench_widget.py [--write-md docs/BENCHMARKS.md] [--artifacts DIR]
    python benchmarks/bench_widget.py --only live [--live-strokes 24] [--live-sizes 512,2048] --write-md docs/BENCHMARKS.md

Needs /usr/bin/chromium and the playwright package (no ``playwright install``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from report import write_section  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
CLASSES = ("background", "bone", "implant", "degradation")
COMMAND = "python benchmarks/bench_widget.py --write-md docs/BENCHMARKS.md"
LIVE_COMMAND = "python benchmarks/bench_widget.py --only live --write-md docs/BENCHMARKS.md"


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def summary(xs):
    return {"n": len(xs), "p50": statistics.median(xs) if xs else float("nan"), "p95": pct(xs, 0.95), "max": max(xs) if xs else float("nan")}


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------- server
class Lab:
    def __init__(self, root: Path, base: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_hex(12)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "lab-settings"
        for rel, value in {"@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
                           "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False}}.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "jcfg"), JUPYTER_RUNTIME_DIR=str(base / "rt"),
                   JUPYTER_DATA_DIR=str(base / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(base / "ws"))
        for var in ("JUPYTER_TOKEN", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
            env.pop(var, None)
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                                      f"--IdentityProvider.token={self.token}", "--allow-root", f"--ServerApp.root_dir={root}", *extra_args],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=3).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab did not start; see {log_path}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}}), path)


def open_notebook(browser, lab: Lab, name: str):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = ctx.new_page()
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_function("""() => document.querySelector('.jp-NotebookPanel .jp-CodeCell') &&
        Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).some(
            e => /[|] Idle$/.test(e.textContent.trim()) && !e.textContent.startsWith('No Kernel'))""", timeout=120_000, polling=200)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
    page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=180_000)
    return ctx, page


def timings(page, name):
    return page.evaluate(f"() => (globalThis.__alAnnotator.timings.{name} || []).slice()")


def reset_timings(page):
    page.evaluate("() => { for (const k in globalThis.__alAnnotator.timings) globalThis.__alAnnotator.timings[k].length = 0; }")


# ---------------------------------------------------------------------------------------------- measurements
def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # the edit log is created by the first edit
        return 0


def measure_page(page, project: Path, shape2d: tuple[int, int], n_switch: int, cold_jumps: list[int]) -> dict:
    root = page.locator(".al-annotator").first
    canvas = root.locator("canvas.al-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    zoom = box["width"] / max(shape2d)
    to_page = lambda r, c: (box["x"] + (c + 0.5) * zoom, box["y"] + (r + 0.5) * zoom)  # noqa: E731
    canvas.click(position={"x": 2, "y": 2}, button="right")
    page.keyboard.press("2")
    res: dict = {}

    # -- strokes: paint timing in the page, mouse-up -> edits.log on disk from here
    reset_timings(page)
    page.evaluate("() => { globalThis.__alAnnotator.measurePaint = true; }")
    logf = project / "edits.log"
    on_disk = []
    h, w = shape2d
    for k in range(5):
        row = int(h * (0.2 + 0.12 * k))
        x0, y0 = to_page(row, int(w * 0.15))
        x1, _ = to_page(row, int(w * 0.85))
        page.mouse.move(x0, y0)
        page.mouse.down()
        for i in range(1, 41):
            page.mouse.move(x0 + (x1 - x0) * i / 40, y0 + 6 * np.sin(i / 4))
            time.sleep(0.016)
        size0 = _size(logf)
        t0 = time.perf_counter()
        page.mouse.up()
        deadline = t0 + 30
        while _size(logf) == size0 and time.perf_counter() < deadline:
            time.sleep(0.001)
        on_disk.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.3)
    page.wait_for_function("() => document.querySelector('.al-annotator').dataset.pending === '0'", timeout=60_000)
    res["paint"] = summary(timings(page, "paint"))
    res["painted"] = summary(timings(page, "painted"))
    res["queued"] = summary(timings(page, "queued"))
    res["raster"] = summary(timings(page, "raster"))
    page.evaluate("() => { globalThis.__alAnnotator.measurePaint = false; }")
    res["on_disk"] = summary(on_disk)
    res["ack"] = summary(timings(page, "ack"))

    # -- window/level by right-drag: redraw without the kernel
    reset_timings(page)
    cx, cy = to_page(h // 2, w // 2)
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    for i in range(1, 41):
        page.mouse.move(cx + 3 * i, cy + (i % 7))
        time.sleep(0.016)
    page.mouse.up(button="right")
    res["wl"] = summary(timings(page, "wl"))

    # -- the comm round trip itself (a ping the kernel answers at once): the floor under the figures below
    reset_timings(page)
    for _ in range(30):
        page.evaluate("() => globalThis.__alAnnotator.widgets.at(-1).ping()")
        time.sleep(0.05)
    page.wait_for_function("() => globalThis.__alAnnotator.timings.ping.length >= 30", timeout=60_000)
    res["ping"] = summary(timings(page, "ping"))

    # -- slice switches: jumps to z slabs not read yet (cold), then ArrowDown steps (neighbours)
    def wait_index(target):
        page.wait_for_function(f"() => document.querySelector('.al-annotator').dataset.index === '{target}'", timeout=120_000)
        time.sleep(0.05)

    reset_timings(page)
    for target in cold_jumps:
        page.evaluate(f"() => globalThis.__alAnnotator.widgets.at(-1).navigate('z', {target})")
        wait_index(target)
    res["switch_cold"] = summary(timings(page, "slice"))
    reset_timings(page)
    start = int(root.get_attribute("data-index"))
    for i in range(1, min(n_switch, start) + 1):
        page.keyboard.press("ArrowDown")
        wait_index(start - i)
    res["switch"] = summary(timings(page, "slice"))
    res["install"] = summary(timings(page, "install"))
    res["kernel_ms_last"] = float(root.get_attribute("data-kernel-ms") or "nan")
    return res


def transfer_choice(project: Path, shape2d: tuple[int, int], canvas: int = 512) -> dict:
    """Kernel time to prepare the whole-slice tile: raw uint16 codes (sent) vs uint8 after W/L."""
    from al_annotator.jupyter._imaging import Quantiser, Region, block_mean, fit_step, window_to_uint8
    from al_annotator.store import open_project
    from al_annotator.types import SliceRef

    store = open_project(project)
    img = store.read_slice(SliceRef("z", 1), "image")
    region = Region.full(shape2d, fit_step(shape2d, canvas))
    q = Quantiser(store.dtype, (0, 65535), store.display_window)
    out = {}
    for name, fn in {"raw_u16": lambda: q.encode(block_mean(img, region)),
                     "u8_wl": lambda: window_to_uint8(block_mean(img, region), store.display_window)}.items():
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            arr = fn()
            ts.append((time.perf_counter() - t0) * 1000)
        out[name] = {"ms": statistics.median(ts), "bytes": arr.nbytes}
    store.close()
    return out


TRAIN_CELL = r'''
import asyncio, json, time
import numpy as np
from al_annotator import SliceRef
s = w.session
for z in (6, 16, 26):                       # three fully labelled slices from the phantom's ground truth
    gt = ph.labels[z]
    for v in np.unique(gt):
        s.paint(np.flatnonzero(gt == v), int(v), ref=SliceRef("z", z))
OUT = %(out)r
lat = []
polls = []
_poll = w.poll
def _timed_poll():
    t = time.perf_counter(); r = _poll(); polls.append((t, time.perf_counter() - t)); return r
w.poll = _timed_poll
import gc
gcs, _gc_t = [], [0.0]
def _gc_cb(phase, info):
    if phase == "start":
        _gc_t[0] = time.perf_counter()
    elif time.perf_counter() - _gc_t[0] > 0.02:
        gcs.append((info["generation"], time.perf_counter() - _gc_t[0], time.perf_counter()))
gc.callbacks.append(_gc_cb)
async def heartbeat():
    loop = asyncio.get_running_loop()
    async def run(seconds, phase, until_model=False):
        t_end = loop.time() + seconds
        while loop.time() < t_end:
            t = loop.time(); await asyncio.sleep(0.01)
            lat.append((loop.time() - t - 0.01, phase, w.trainer.get("state"), time.perf_counter()))
            if until_model and w.model_version is not None:
                return True
        return False
    await run(5.0, "baseline")
    for z in (6, 16, 26):
        s.mark_annotated(SliceRef("z", z))
    s.start_trainer(device="cpu")
    got = await run(%(budget)s, "trainer", until_model=True)
    w.show_prediction = True; w.show_uncertainty = True
    s.refresh_suggestions()
    await asyncio.sleep(3.0)
    slow = [(x[0], x[3], [p for p in polls if p[0] <= x[3] and p[0] >= x[3] - x[0] - 0.02]) for x in lat if x[0] > 0.05]
    json.dump({"lat": lat, "model": got, "trainer": dict(w.trainer), "history": list(w.history), "poll_ms": list(w.poll_ms),
               "slow": slow, "gc": gcs}, open(OUT + ".tmp", "w"))
    import os; os.replace(OUT + ".tmp", OUT)
task = asyncio.ensure_future(heartbeat())
'''


CONTROL = r'''
import asyncio, json, os, sys, time
async def main(stop):
    loop, out = asyncio.get_running_loop(), []
    while not os.path.exists(stop):
        t = loop.time(); await asyncio.sleep(0.01)
        out.append((loop.time() - t - 0.01, time.perf_counter()))
    return out
json.dump(asyncio.run(main(sys.argv[1])), open(sys.argv[2], "w"))
'''


def measure_training(browser, lab: Lab, root: Path, artifacts: Path, budget_s: float) -> dict:
    out = root / "heartbeat.json"
    # the same 10 ms timer in a bare Python process (no kernel, no widget) over the same time: the
    # machine's own scheduling floor, to tell the widget's pauses from the operating system's
    stop, control_out = root / "control.stop", root / "control.json"
    control = subprocess.Popen([sys.executable, "-c", CONTROL, str(stop), str(control_out)])
    project = root / "p_train"
    write_notebook(root / "train.ipynb", [
        "from al_annotator import Annotator, make_phantom\nfrom al_annotator.store import create_project\n"
        f"ph = make_phantom((32, 128, 128), seed=0)\ncreate_project({str(project)!r}, ph.image, classes={CLASSES!r}).close()\n"
        f"w = Annotator({str(project)!r}, canvas_size=512)\nw",
        TRAIN_CELL % {"out": str(out), "budget": budget_s},
    ])
    ctx, page = open_notebook(browser, lab, "train.ipynb")
    try:
        deadline = time.monotonic() + budget_s + 90
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(1.0)
        if not out.exists():
            raise RuntimeError("the kernel never wrote its heartbeat results")
        data = json.loads(out.read_text())
        page.wait_for_timeout(1500)
        page.locator(".al-annotator").first.screenshot(path=str(artifacts / "bench_widget_trained.png"))
    finally:
        ctx.close()
        stop.touch()
        control.wait(timeout=60)
        subprocess.run([sys.executable, "-c", f"from al_annotator.training import TrainerClient as T; T({str(project)!r}).stop(timeout=30)"], check=False)
    base = [x[0] * 1000 for x in data["lat"] if x[1] == "baseline"]
    train = [x[0] * 1000 for x in data["lat"] if x[1] == "trainer" and x[2] in ("training", "predicting")]
    every = [x[0] * 1000 for x in data["lat"] if x[1] == "trainer"]
    window = [x[3] for x in data["lat"] if x[1] == "trainer" and x[2] in ("training", "predicting")]
    ctl = json.loads(control_out.read_text()) if control_out.exists() else []
    ctl = [x[0] * 1000 for x in ctl if window and window[0] <= x[1] <= window[-1]]
    log("gc pauses > 20 ms (s):", json.dumps(data.get("gc", [])))
    log("pauses > 50 ms (lateness s, when, overlapping polls (start, s)):", json.dumps(data.get("slow", [])))
    return {"baseline": summary(base), "training": summary(train), "trainer_all": summary(every),
            "model": data["model"], "history": data["history"], "seconds_training": len(train) * 0.0105,
            "poll": summary(data["poll_ms"]), "control": summary(ctl), "gc": data.get("gc", [])}


# ---------------------------------------------------------------------------------------------- live preview
LIVE_CELL = r'''
from al_annotator import Annotator
import json, os, time
w = Annotator(%(project)r, canvas_size=512, brush_size=5, live_preview=True)
_tier1 = []
def _record(p, _s=w.session, _out=%(out)r):
    t = dict(getattr(_s._live, "timings", {}) or {})   # tier 1's own figures (private, for this benchmark)
    _tier1.append({"seq": p.seq, "seconds": p.seconds, "ref": str(p.ref), **t})
    with open(_out + ".tmp", "w") as f:
        json.dump(_tier1, f)
    os.replace(_out + ".tmp", _out)
w.session.preview_changed.connect(_record)
w
'''


def measure_live(page, shape2d: tuple[int, int], n_strokes: int, timeout_s: float) -> dict:
    """Strokes alternating classes 1 and 2, each after the previous one's prediction was drawn:
    mouse-up -> overlay drawn, as the page times it (``dbg.timings.overlay``)."""
    root = page.locator(".al-annotator").first
    canvas = root.locator("canvas.al-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    zoom = box["width"] / max(shape2d)
    to_page = lambda r, c: (box["x"] + (c + 0.5) * zoom, box["y"] + (r + 0.5) * zoom)  # noqa: E731
    canvas.click(position={"x": 2, "y": 2}, button="right")
    page.evaluate("() => { globalThis.__alAnnotator.measurePaint = true; }")
    h, w = shape2d
    rng = np.random.default_rng(0)

    def stroke(k: int, value: int) -> None:
        page.keyboard.press(str(value))
        page.wait_for_function(f"() => document.querySelector('.al-annotator').dataset.activeClass === '{value}'", timeout=30_000)
        row, c0 = int(rng.integers(h // 10, h * 9 // 10)), int(rng.integers(w // 10, w // 2))
        x0, y0 = to_page(row, c0)
        x1, _ = to_page(row, c0 + w // 4)
        page.mouse.move(x0, y0)
        page.mouse.down()
        for i in range(1, 21):
            page.mouse.move(x0 + (x1 - x0) * i / 20, y0 + 3 * np.sin(i / 3))
            time.sleep(0.016)
        page.mouse.up()

    def wait_overlays(n: int) -> None:
        page.wait_for_function(f"() => globalThis.__alAnnotator.timings.overlay.length >= {n}", timeout=timeout_s * 1000, polling=20)

    reset_timings(page)
    t0 = time.perf_counter()
    stroke(0, 1)
    stroke(1, 2)  # the first fit: two classes, the filter bank's tiles of this plane computed cold
    wait_overlays(1)
    first = (time.perf_counter() - t0) * 1000
    reset_timings(page)
    for k in range(n_strokes):
        stroke(k, 1 + k % 2)
        wait_overlays(k + 1)
        time.sleep(0.2)
    lat = timings(page, "overlay")
    page.evaluate("() => { globalThis.__alAnnotator.measurePaint = false; }")
    return {"overlay": summary(lat), "first_ms": first, "ack": summary(timings(page, "ack")),
            "served": root.locator(".al-served").inner_text()}


def run_live(browser, lab: Lab, root: Path, artifacts: Path, sizes: list[int], n_strokes: int) -> dict:
    from al_annotator import make_phantom
    from al_annotator.store import create_project

    shapes = {512: (8, 512, 512), 2048: (8, 2048, 2048)}  # as bench_napari --only live: 8 z slices
    out: dict = {}
    for side in sizes:
        shape = shapes[side]
        project = root / f"live{side}"
        create_project(project, make_phantom(shape, seed=0).image, classes=CLASSES).close()
        t1 = root / f"live{side}_tier1.json"
        write_notebook(root / f"live{side}.ipynb", [LIVE_CELL % {"project": str(project), "out": str(t1)}])
        ctx, page = open_notebook(browser, lab, f"live{side}.ipynb")
        try:
            res = measure_live(page, shape[1:], n_strokes if side == 512 else max(4, n_strokes // 4), 600 if side == 512 else 1200)
            page.locator(".al-annotator").first.screenshot(path=str(artifacts / f"bench_widget_live_{side}.png"))
        finally:
            ctx.close()
        rows = json.loads(t1.read_text()) if t1.exists() else []
        rows = rows[1:]  # the cold first fit is reported on its own
        ms = lambda key: summary([r[key] * 1000 for r in rows if key in r])  # noqa: E731
        res["tier1"] = {"preview": ms("seconds"), "fit": ms("fit_s"), "features": ms("features_s"), "plane": ms("plane_s"), "coarse": ms("coarse_plane_s"),
                        "labelled": max((r.get("labelled", 0) for r in rows), default=0), "n": len(rows)}
        res["shape"] = list(shape)
        out[side] = res
        log(f"live {side}", json.dumps(res, indent=1))
    return out


def _trainer_words(t: dict | None) -> str:
    if not t:
        return "No trainer process ran."
    return (f"A real tier-2 trainer process (CPU, nice 10, continuous, on a 32x128x128 phantom project of its own: "
            f"`benchmarks/trainer_load.py`) was training or predicting in {100 * t['trainer_busy_share']:.0f} % of "
            f"{t['samples']} one-second samples; load average p50 {t['load_p50']} / max {t['load_max']} during the run.")


def markdown_live(r: dict) -> str:
    f = lambda s: f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}" if s["n"] else "–"  # noqa: E731
    sides = [k for k in (512, 2048) if k in r["live"]]
    head = " | ".join(f"{s}^2 slice ({'x'.join(map(str, r['live'][s]['shape']))})" for s in sides)
    row = lambda name, get: f"| {name} | " + " | ".join(get(r["live"][s]) for s in sides) + " |"  # noqa: E731
    lines = [
        "JupyterLab 4 + headless Debian Chromium (Playwright), `Annotator(project, live_preview=True)`, canvas 512 CSS px, "
        f"phantom projects, 1-minute load average at start / end: {r['load'][0]} / {r['load'][1]} on 2 cores (other jobs "
        "were running). " + _trainer_words(r.get("trainer")) + " Each stroke (20 mouse moves, brush 5, alternating classes 1 and 2) waits for the previous one's "
        "prediction. \"Mouse-up -> overlay drawn\" is timed in the page: `performance.now()` at pointer-up, until the "
        "`overlays` message whose `labels_seq` includes that stroke's acknowledged edit is composited and drawn (a 1-pixel "
        "readback forces the raster). Figures are p50 / p95 / max in ms.",
        "",
        f"| measurement | {head} |",
        "| --- |" + " --- |" * len(sides),
        row("strokes measured", lambda x: str(x["overlay"]["n"])),
        row("**mouse-up -> updated prediction overlay drawn**", lambda x: f(x["overlay"])),
        row("mouse-up -> kernel ack (the stroke stored)", lambda x: f(x["ack"])),
        row("first two strokes -> first overlay (cold filter bank: the plane's feature tiles computed)", lambda x: f"{x['first_ms']:.0f}"),
        row("tier 1 in the kernel: refit + plane prediction (`PlanePreview.seconds`)", lambda x: f(x["tier1"]["preview"])),
        row("of which: features of the labelled voxels (`features_s`)", lambda x: f(x["tier1"]["features"])),
        row("of which: forest fit (`fit_s`)", lambda x: f(x["tier1"]["fit"])),
        row("the coarse first look's features + prediction (`coarse_plane_s`: what the overlay waits for above 256^2)",
            lambda x: f(x["tier1"].get("coarse", {"n": 0}))),
        row("the full plane's features + prediction (`plane_s`: after the coarse look, abandoned when a stroke comes)",
            lambda x: f(x["tier1"]["plane"])),
        row("labelled voxels at the end", lambda x: str(x["tier1"]["labelled"])),
        row("served line at the end", lambda x: x["served"]),
        "",
        "The rest of mouse-up -> overlay is the comm round trip, the fast timer's wait for a finished preview "
        "(`Session.take_previews` every 0.1 s on the kernel's loop), sampling, sending and drawing. Tier 1 runs on "
        "one background thread at nice 5; painting never waits for it (strokes are acknowledged as before).",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-md", help="write the figures into this markdown file")
    ap.add_argument("--artifacts", default=str(Path(__file__).resolve().parent.parent / "tests" / "zz_e2e" / "artifacts"))
    ap.add_argument("--switches", type=int, default=30)
    ap.add_argument("--train-budget", type=float, default=240.0, help="seconds to wait for the first model version")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--only", default="512,2048,nodelay,training",
                    help="comma-separated parts to run (for development; --write-md needs all, or 'live' alone: its own section)")
    ap.add_argument("--live-strokes", type=int, default=24, help="live: strokes measured at 512^2 (a quarter at 2048^2)")
    ap.add_argument("--live-sizes", default="512", help="live: slice sizes, e.g. 512,2048")
    ap.add_argument("--no-trainer", action="store_true",
                    help="live: without the tier-2 trainer process training meanwhile (benchmarks/trainer_load.py)")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"needs {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    from al_annotator import make_phantom
    from al_annotator.store import create_project

    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="al_bench_widget_"))
    root = tmp / "work"
    root.mkdir()
    only = set(args.only.split(","))
    if args.skip_training:
        only.discard("training")
    if only == {"live"}:
        import contextlib

        from trainer_load import TrainingLoad

        load0 = os.getloadavg()[0]
        lab = Lab(root, tmp / "live", artifacts / "bench_widget_lab_live.log")
        trainer = TrainingLoad(tmp) if not args.no_trainer else None
        try:
            with (trainer or contextlib.nullcontext()):
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                    live = run_live(browser, lab, root, artifacts, [int(x) for x in args.live_sizes.split(",")], args.live_strokes)
                    browser.close()
        finally:
            lab.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        results = {"live": live, "load": [round(load0, 1), round(os.getloadavg()[0], 1)],
                   "trainer": trainer.summary() if trainer is not None else None}
        (artifacts / "bench_widget_live.json").write_text(json.dumps(results, indent=1, default=str))
        if args.write_md:
            command = LIVE_COMMAND + ("" if args.live_sizes == "512" else f" --live-sizes {args.live_sizes}")
            write_section(args.write_md, "bench_widget_live", "Notebook widget: live preview, stroke to updated prediction overlay",
                          markdown_live(results), command)
            log(f"wrote {args.write_md}")
        return
    sizes = {512: (320, 512, 512), 2048: (32, 2048, 2048)}
    if "512" not in only and "nodelay" not in only:
        sizes.pop(512)
    if "2048" not in only:
        sizes.pop(2048)
    # 2048^2: the widget opens at z = 16 (the 16-slice block 16..31 is read then); z = 13 is in block 0..15
    cold = {512: [10, 70, 200, 260], 2048: [13]}
    projects = {}
    for side, shape in sizes.items():
        t0 = time.perf_counter()
        ph = make_phantom(shape, seed=0)
        projects[side] = root / f"p{side}"
        create_project(projects[side], ph.image, classes=CLASSES).close()
        log(f"project {shape} created in {time.perf_counter() - t0:.1f} s")
        write_notebook(root / f"w{side}.ipynb", [f"from al_annotator import Annotator\nw = Annotator({str(projects[side])!r}, canvas_size=512)\nw"])
    load0 = os.getloadavg()[0]
    results: dict = {"transfer": {side: transfer_choice(projects[side], sizes[side][1:]) for side in sizes}}
    from al_annotator.jupyter.server import CONFIG_FLAG

    # as shipped (jupyter_server's defaults), then with TCP_NODELAY on the kernel websocket (512^2 only)
    for server, extra in (("stock", ()), ("nodelay", (CONFIG_FLAG,))):
        if server == "nodelay" and "nodelay" not in only or server == "stock" and not ({"512", "2048", "training"} & only):
            continue
        lab = Lab(root, tmp / server, artifacts / f"bench_widget_lab_{server}.log", extra)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                for side in ([s for s in sizes if str(s) in only] if server == "stock" else [512]):
                    key = side if server == "stock" else f"{side}_nodelay"
                    ctx, page = open_notebook(browser, lab, f"w{side}.ipynb")
                    try:
                        results[key] = measure_page(page, projects[side], sizes[side][1:], args.switches if side == 512 else 6, cold[side])
                        page.locator(".al-annotator").first.screenshot(path=str(artifacts / f"bench_widget_{key}.png"))
                    finally:
                        ctx.close()
                    log(key, json.dumps(results[key], indent=1))
                if server == "stock" and "training" in only:
                    results["training"] = measure_training(browser, lab, root, artifacts, args.train_budget)
                    log("training", json.dumps(results["training"], indent=1))
                browser.close()
        finally:
            lab.stop()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)  # the projects (~300 MB)
    results["load"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
    (artifacts / "bench_widget.json").write_text(json.dumps(results, indent=1, default=str))
    if args.write_md:
        write_section(args.write_md, "bench_widget", "Notebook widget: painting, strokes to disk, slice switches, kernel while training",
                      markdown(results), COMMAND)
        log(f"wrote {args.write_md}")


def markdown(r: dict) -> str:
    f = lambda s: f"{s['p50']:.1f} / {s['p95']:.1f} / {s['max']:.1f}" if s["n"] else "–"  # noqa: E731
    a, b, n = r[512], r[2048], r.get("512_nodelay")
    g = lambda key: f(n[key]) if n else "–"  # noqa: E731
    lines = [
        "JupyterLab 4 + headless Debian Chromium (Playwright), widget canvas 512 CSS px, phantom projects "
        "(uint16, 64^3 chunks): 320x512x512 and 32x2048x2048. 1-minute load average at start / end: "
        f"{r['load'][0]} / {r['load'][1]} on 2 cores (other jobs were running). Figures are p50 / p95 / max in ms. Paint, "
        "slice-switch and window/level times are measured in the page with `performance.now()`; "
        "\"on disk\" is Playwright's `mouse.up()` until `edits.log` grew (it is fsync'ed in the same call).",
        "",
        "| measurement | 512^2 slice | 2048^2 slice (shown 1:4) | 512^2, server with TCP_NODELAY | target |",
        "| --- | --- | --- | --- | --- |",
        f"| mouse move -> segment painted: the widget's handler (n = {a['paint']['n']}) | {f(a['paint'])} | {f(b['paint'])} | {g('paint')} | p95 <= 16 |",
        f"| mouse move -> pixel on the canvas: input event to raster forced by a 1-pixel readback | {f(a['painted'])} | {f(b['painted'])} | {g('painted')} | p95 <= 16 |",
        f"| of which input event -> the widget's handler starts | {f(a['queued'])} | {f(b['queued'])} | {g('queued')} | |",
        f"| mouse-up -> stroke on disk (n = {a['on_disk']['n']}) | {f(a['on_disk'])} | {f(b['on_disk'])} | {g('on_disk')} | p95 <= 250 |",
        f"| mouse-up -> kernel ack back in the page | {f(a['ack'])} | {f(b['ack'])} | {g('ack')} | |",
        f"| slice switch to a neighbour: request -> slice drawn (n = {a['switch']['n']} / {b['switch']['n']}) | {f(a['switch'])} | {f(b['switch'])} | {g('switch')} | p95 <= 100 at 512^2 |",
        f"| of which the page: decode the tile, composite, draw | {f(a['install'])} | {f(b['install'])} | {g('install')} | |",
        f"| slice switch to a slab (2048^2: a 16-slice block) not read yet (n = {a['switch_cold']['n']} / {b['switch_cold']['n']}) | {f(a['switch_cold'])} | {f(b['switch_cold'])} | {g('switch_cold')} | |",
        f"| window/level drag step -> redrawn (no kernel) | {f(a['wl'])} | {f(b['wl'])} | {g('wl')} | |",
        f"| comm round trip: ping -> pong (kernel does nothing), for reference | {f(a['ping'])} | {f(b['ping'])} | {g('ping')} | |",
        "",
        "Painting follows Chromium's `pointerrawupdate` events, dispatched as soon as the input arrives; with "
        "`mousemove`, which waits for the next animation frame, input -> handler was 2.0 / 15.4 / 34.7 ms "
        "(p50 / p95 / max, 2048^2 page, load average ~7-9, before the change) and input -> pixel p95 16.4-19.1 ms.",
        "",
        "jupyter_server leaves Nagle's algorithm on for the kernel websocket, so a kernel -> browser message "
        "often waits for the browser's delayed ACK (~40 ms on Linux): the ping row, and the floor under every "
        "slice switch. The last column runs the server with `al_annotator.jupyter.server.NoDelayKernelWebsocketConnection` "
        "(`--ServerApp.kernel_websocket_connection_class=...`), which sets `TCP_NODELAY` and nothing else.",
        "",
        "At 512^2 the kernel reads a slice's whole 64-slice chunk slab once (about twice the cost of one "
        "slice) and serves the neighbours from memory. A 2048^2 z slab would be 512 MiB, but one 2048^2 z slice "
        "already reads all 1024 of its chunks (zarr reads whole chunks), so the kernel reads 16 slices at once and "
        "keeps only what is shown, at the resolution shown (`al_annotator.jupyter._cache.TileCache`: at 1:4, "
        "16 x 512 x 512 codes + labels, 12 MiB; predictions likewise); it reads the next block in the background "
        "when stepping towards it. Labels there are kept equal to the store by applying every edit to the "
        "sampled pixels (edits made while a block was being read are replayed on it). Before this, with every "
        "2048^2 z slice read alone, a neighbour switch took 1078 / 1892 ms (p50 / p95; 16x2048x2048, load "
        "average ~5-7) here and 406 / 776 ms in the earlier run at ~4.8.",
        "",
        "Transfer format, kernel time to prepare the whole-slice tile (median of 15): "
        + "; ".join(f"{side}^2: raw uint16 codes {t['raw_u16']['ms']:.1f} ms ({t['raw_u16']['bytes'] // 1024} KiB), "
                    f"uint8 after window/level {t['u8_wl']['ms']:.1f} ms ({t['u8_wl']['bytes'] // 1024} KiB)"
                    for side, t in r["transfer"].items())
        + ". Raw codes are sent: twice the bytes over a loopback websocket, less kernel time, and "
        "window/level then redraws in the page (row above) instead of costing a kernel round trip per drag step.",
    ]
    if "training" in r:
        t = r["training"]
        lines += [
            "",
            "Kernel responsiveness: lateness of a 10 ms asyncio timer in the notebook kernel, with the widget "
            "displayed and polling the project every 0.5 s on the same event loop; 3 labelled 128^2 slices "
            "of a 32x128x128 phantom, trainer started from the kernel (`device=\"cpu\"`, nice 10, default "
            f"config) until model v1 is published{' (it was)' if t['model'] else ' (it was not, within the budget)'}.",
            "",
            "| phase | timer ticks | lateness p50 / p95 / max (ms) | target |",
            "| --- | --- | --- | --- |",
            f"| before the trainer | {t['baseline']['n']} | {f(t['baseline'])} | |",
            f"| trainer training or predicting | {t['training']['n']} | {f(t['training'])} | no pause > 100 |",
            f"| whole trainer run (incl. process start-up) | {t['trainer_all']['n']} | {f(t['trainer_all'])} | |",
            f"| the widget's poll itself (`Session.poll` + status) | {t['poll']['n']} calls | {f(t['poll'])} | |",
            f"| control: the same timer in a bare Python process (no kernel, no widget), same time window | {t['control']['n']} | {f(t['control'])} | |",
            "",
            "Garbage-collector pauses over 20 ms in the kernel during this run: "
            + (", ".join(f"generation {g[0]}, {g[1] * 1000:.0f} ms" for g in t.get("gc", [])) or "none")
            + ". The widget leaves the user's collector alone (no `gc.freeze()`: a library must not change "
            "how the kernel collects); a full generation-2 collection walks every module the kernel imported "
            "(205 ms in an earlier run, while the control process's worst lateness was 22 ms at load average ~8.7). "
            "A new model version's prediction is read on a reader thread, not on the loop.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
