"""Browser tests: a real JupyterLab on loopback and Debian's headless Chromium driven by Playwright.

Skipped, with the reason, when ``/usr/bin/chromium`` (``apt-get install -y chromium``) or the
``playwright`` package is missing; never ``playwright install`` (no downloads here). The recipe and
its pitfalls are in ``/work/shared/e2e/RECIPE.md``. Screenshots and the server log go to
``$E2E_ARTIFACTS`` (default ``tests/zz_e2e/artifacts/``, git-ignored).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AL_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
#: JupyterLab user settings: no news/update toast over the page, no autosave editing the notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}
SERVER_START_TIMEOUT = 120.0


def artifacts_dir() -> Path:
    path = Path(os.environ.get("E2E_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium); it is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright Python package (pip install playwright; the browser is Debian's chromium)"
    try:
        import jupyterlab  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        return f"needs jupyterlab and nbformat ({exc})"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class JupyterServer:
    """A Jupyter server process started for one test module, on loopback, with a fresh token.

    ``app`` is ``"lab"`` (JupyterLab), ``"notebook"`` (Notebook 7) or ``"voila"``; each runs this
    Python's ipykernel with no user config, settings, workspaces or kernelspecs.
    """

    def __init__(self, root: Path, base: Path, app: str = "lab") -> None:
        self.root, self.app = root, app
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "lab-settings"
        for rel, value in LAB_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "jcfg"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
                   JUPYTER_DATA_DIR=str(base / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), PYTHONUNBUFFERED="1")
        for var in ("JUPYTER_TOKEN", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
            env.pop(var, None)
        self.log_path = artifacts_dir() / {"lab": "jupyterlab.log"}.get(app, f"{app}.log")
        self._log = open(self.log_path, "w")
        common = ["--no-browser", f"--port={self.port}", f"--IdentityProvider.token={self.token}", "--allow-root",
                  f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
        if app == "lab":
            cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", *common,
                   "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
            probe = f"{self.url}/api/status?token={self.token}"
        elif app == "notebook":
            cmd = [sys.executable, "-m", "notebook", "--ip=127.0.0.1", *common]
            probe = f"{self.url}/api/status?token={self.token}"
        elif app == "voila":
            # voila's own app (not a server extension): it executes a notebook per page request
            cmd = [sys.executable, "-m", "voila", "--no-browser", f"--port={self.port}", "--Voila.ip=127.0.0.1",
                   f"--Voila.root_dir={root}", f"--token={self.token}", "--show_tracebacks=True"]
            probe = f"{self.url}/?token={self.token}"
        else:
            raise ValueError(f"unknown app {app!r}")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{app} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _get(probe)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{app} did not answer within {SERVER_START_TIMEOUT} s:\n{self.log_tail()}")
                time.sleep(0.2)

    def notebook_url(self, name: str) -> str:
        if self.app == "notebook":
            return f"{self.url}/notebooks/{name}?token={self.token}"
        if self.app == "voila":
            return f"{self.url}/voila/render/{name}?token={self.token}"
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


Lab = JupyterServer  # the JupyterLab tests' name for it


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked "running" in this thread
# while it is started, which would mislead asyncio code in tests collected after this module.
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    root = base / "work"
    root.mkdir()
    server = Lab(root, base)
    yield server
    server.stop()


def _server_fixture(tmp_path_factory, app: str, module: str):
    try:
        __import__(module)
    except ImportError as exc:
        pytest.skip(f"needs the {module} package (pip install -e .[dev]): {exc}")
    base = tmp_path_factory.mktemp(app)
    root = base / "work"
    root.mkdir()
    return JupyterServer(root, base, app)


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    """Jupyter Notebook 7 (``jupyter notebook``) on loopback, for one module."""
    server = _server_fixture(tmp_path_factory, "notebook", "notebook")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voila_server(tmp_path_factory):
    """A ``voila`` server (its own app, serving a directory) on loopback, for one module."""
    server = _server_fixture(tmp_path_factory, "voila", "voila")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(src) for src in cells], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.write(nb, path)


def open_and_run(page, lab: Lab, name: str, timeout_ms: int = 120_000) -> None:
    """Open a notebook in JupyterLab, wait for a live kernel, then Run > Run All Cells."""
    page.goto(lab.notebook_url(name))
    # the execution indicator reads 'idle' before the kernel exists: wait for the status bar instead
    page.wait_for_function("""() => document.querySelector('.jp-NotebookPanel .jp-CodeCell') &&
        Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).some(
            e => /[|] Idle$/.test(e.textContent.trim()) && !e.textContent.startsWith('No Kernel'))""",
                           timeout=timeout_ms, polling=200)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")


def _api(server: JupyterServer, path: str):
    return json.loads(_get(f"{server.url}/api/{path}?token={server.token}"))


def open_and_run_notebook7(page, server: JupyterServer, name: str, timeout_ms: int = 120_000) -> None:
    """Open a notebook in Notebook 7 (``/notebooks/...``), wait for a live kernel, then Run > Run All Cells.

    Notebook 7 has no status bar, and its execution indicator reads 'idle' before a kernel
    exists: wait, on the server's REST API, for this notebook's kernel to be idle with a
    websocket connected (the page's), then for the indicator.
    """
    page.goto(server.notebook_url(name))
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        sessions = [s for s in _api(server, "sessions") if s.get("path", "").endswith(name) and s.get("kernel")]
        kernel = _api(server, f"kernels/{sessions[0]['kernel']['id']}") if sessions else {}
        if kernel.get("connections", 0) > 0 and kernel.get("execution_state") == "idle":
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no idle, connected kernel for {name} after {timeout_ms} ms (sessions: {sessions})")
        time.sleep(0.2)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=timeout_ms)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout_ms)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li.lm-Menu-item[data-command='runmenu:run-all']")


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    """Poll ``check`` every 0.1 s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def disk_labels(project: Path, ref):
    """The labels of slice ``ref`` as the project store on disk has them (read from this process)."""
    from al_annotator.store import open_project

    store = open_project(project)
    try:
        return store.read_slice(ref, "labels")
    finally:
        store.close()


def make_phantom_project(project: Path, shape=(16, 64, 64), classes=("background", "bone", "implant", "degradation")):
    from al_annotator import make_phantom
    from al_annotator.store import create_project

    create_project(str(project), make_phantom(shape, seed=3).image, classes=classes).close()


class Widget:
    """The rendered annotator in a page, with its slice-to-page coordinate mapping (a 64 px wide slice)."""

    def __init__(self, page, project: Path, width: int = 64) -> None:
        self.page, self.project, self.width = page, project, width
        self.root = page.locator(".al-annotator").first
        self.canvas = self.root.locator("canvas.al-canvas")

    def data(self, key: str):
        return self.root.get_attribute(f"data-{key}")

    @property
    def ref(self):
        from al_annotator.types import SliceRef

        return SliceRef(self.data("axis"), int(self.data("index")))

    def page_xy(self, row: float, col: float) -> tuple[float, float]:
        """Page coordinates of slice pixel (row, col)'s centre in the fitted view."""
        self.canvas.scroll_into_view_if_needed()
        box = self.canvas.bounding_box()
        zoom = box["width"] / self.width
        return box["x"] + (col + 0.5) * zoom, box["y"] + (row + 0.5) * zoom

    def drag(self, row: int, c0: int, c1: int, steps: int = 30) -> None:
        """A real mouse drag (trusted events) along a row of the slice."""
        x0, y0 = self.page_xy(row, c0)
        x1, _ = self.page_xy(row, c1)
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        for i in range(1, steps + 1):
            self.page.mouse.move(x0 + (x1 - x0) * i / steps, y0)
        self.page.mouse.up()


def paint_and_check_stroke(widget: Widget, *, value: int = 3, row: int = 20, c0: int = 10, c1: int = 40,
                           brush: float = 5.0, timeout: float = 60.0):
    """Pick class ``value`` with its key, drag along ``row`` from ``c0`` to ``c1``, and check the store on disk.

    Passes only when the stroke went browser -> kernel -> store: the pixels under the mouse path
    hold ``value``, nothing lies outside the brush (plus 1 px for integer mouse positions), no other
    class was written, and the neighbouring slice is untouched. Returns the slice's labels.
    """
    import numpy as np
    from al_annotator.types import SliceRef

    ref = widget.ref
    widget.canvas.click(position={"x": 2, "y": 2}, button="right")  # focus the widget without painting
    widget.page.keyboard.press(str(value))
    wait_until(lambda: widget.data("active-class") == str(value), 30, f"the {value} key to pick class {value}")
    widget.drag(row, c0, c1)

    def painted():
        labels = disk_labels(widget.project, ref)
        return [labels] if labels.any() else None

    (lab,) = wait_until(painted, timeout, "the stroke on disk")
    rows, cols = np.nonzero(lab)
    assert set(np.unique(lab[rows, cols]).tolist()) == {value}
    assert (lab[row, c0:c1 + 1] == value).all(), lab[row]
    dist = np.hypot(np.clip(cols + 0.5, c0 + 0.5, c1 + 0.5) - (cols + 0.5), rows + 0.5 - (row + 0.5))
    assert dist.max() <= brush / 2 + 1.0, (rows, cols)
    other = SliceRef(ref.axis, ref.index - 1 if ref.index > 0 else ref.index + 1)
    assert disk_labels(widget.project, other).max() == 0
    # the kernel acknowledged the stroke: nothing is pending in the browser
    wait_until(lambda: widget.data("pending") == "0", 30, "the browser to drop its pending stroke")
    return lab


def widget_errors(page) -> list[str]:
    """Collect page errors and console errors that come from the widget (not from the host app).

    The host apps log their own noise (Notebook 7's core, and in Voila the JupyterLab extensions
    that need JupyterLab's document manager, al-annotator's launcher extension among them:
    ``labextensions/al-annotator/static/remoteEntry``); the widget's module is an anywidget ESM.
    """
    errors: list[str] = []

    def keep(text: str) -> None:
        low = text.lower()
        if "remoteentry" in low or "shared module" in low or "failed to create module" in low:
            return
        if "anywidget" in low or "al-annotator" in low or "al_annotator" in low or "blob:" in low:
            errors.append(text)

    page.on("pageerror", lambda e: keep(f"{e}\n{e.stack or ''}"))
    page.on("console", lambda m: m.type == "error" and keep(m.text))
    return errors



def paint_in_served_notebook(server, browser, prefix: str, open_page, *, value: int) -> None:
    """The whole host-app check: a phantom project and the package's notebook for it under
    ``server.root``, ``open_page(page, notebook_name)`` shows the widget (running the notebook where
    the host app needs that), then a painted stroke of class ``value`` must be on disk and the widget
    must log no error. Screenshots ``<prefix>_stroke.png`` / ``<prefix>_failure.png``."""
    from al_annotator.jupyter_ext import write_annotator_notebook
    from al_annotator.types import SliceRef

    project = server.root / f"{prefix}_project"
    make_phantom_project(project)
    notebook = write_annotator_notebook(project, server.root)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors = widget_errors(page)
    art = artifacts_dir()
    try:
        open_page(page, notebook.name)
        page.wait_for_selector(".al-annotator[data-ready='1'] canvas.al-canvas", state="visible", timeout=120_000)
        widget = Widget(page, project)
        assert widget.ref == SliceRef("z", 8)  # the session starts in the middle of z
        paint_and_check_stroke(widget, value=value, brush=5)  # the notebook's Annotator() default brush
        page.screenshot(path=str(art / f"{prefix}_stroke.png"))
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(art / f"{prefix}_failure.png"))
        print(server.log_tail())
        raise
    finally:
        ctx.close()

@pytest.fixture(scope="session")
def e2e_tools():
    """Helpers for the tests (a fixture, because tests/zz_e2e is not a package to import from)."""
    from types import SimpleNamespace

    return SimpleNamespace(artifacts_dir=artifacts_dir, open_and_run=open_and_run, write_notebook=write_notebook,
                           open_and_run_notebook7=open_and_run_notebook7, wait_until=wait_until,
                           disk_labels=disk_labels, make_phantom_project=make_phantom_project, Widget=Widget,
                           paint_and_check_stroke=paint_and_check_stroke, widget_errors=widget_errors,
                           paint_in_served_notebook=paint_in_served_notebook)
