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


class Lab:
    """A JupyterLab server started for the test session."""

    def __init__(self, root: Path, base: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = base / "lab-settings"
        for rel, value in LAB_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        # hermetic: no user config, settings, workspaces or kernelspecs (the kernel is this Python's ipykernel)
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "jcfg"), JUPYTER_RUNTIME_DIR=str(base / "runtime"),
                   JUPYTER_DATA_DIR=str(base / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"), PYTHONUNBUFFERED="1")
        for var in ("JUPYTER_TOKEN", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
            env.pop(var, None)
        self.log_path = artifacts_dir() / "jupyterlab.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", "--allow-root", f"--ServerApp.root_dir={root}",
               "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _get(f"{self.url}/api/status?token={self.token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_TIMEOUT} s:\n{self.log_tail()}")
                time.sleep(0.2)

    def notebook_url(self, name: str) -> str:
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


@pytest.fixture(scope="session")
def e2e_tools():
    """Helpers for the tests (a fixture, because tests/zz_e2e is not a package to import from)."""
    from types import SimpleNamespace

    return SimpleNamespace(artifacts_dir=artifacts_dir, open_and_run=open_and_run, write_notebook=write_notebook)
