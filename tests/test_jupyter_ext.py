"""Jupyter integration: the prebuilt JupyterLab extension, the kernel specs, binder, launch_demo.

The browser test drives Debian's Chromium through Playwright (``@pytest.mark.browser``; skipped
without /usr/bin/chromium): the launcher card and the file-browser item each create a notebook
whose first cell opens the target with ``Annotator(...)`` and run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from al_annotator import jupyter_ext as J

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
BUILT = ROOT / "al_annotator" / "labextension"
SOURCE = ROOT / "labextension"
BINDER = ROOT / "binder"
CHROMIUM = "/usr/bin/chromium"
EXTERNALS = ("@jupyterlab/application", "@jupyterlab/launcher", "@jupyterlab/filebrowser", "@jupyterlab/docmanager")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_specs() -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(KERNELS.glob("*/kernel.json"))}


# ------------------------------------------------------------------------------------------------
# kernel specs
# ------------------------------------------------------------------------------------------------
def test_kernel_specs_are_valid():
    specs = _kernel_specs()
    assert set(specs) == {"al-annotator-cpu", "al-annotator-gpu", "al-annotator-slurm-gpu", "al-annotator-slurm-trainer"}
    for name, spec in specs.items():
        assert "{connection_file}" in spec["argv"], name
        assert spec["language"] == "python" and spec["display_name"].startswith("al_annotator"), name
        assert all(isinstance(v, str) for v in spec.get("env", {}).values()), name
    assert specs["al-annotator-cpu"]["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert specs["al-annotator-gpu"]["env"]["CUDA_VISIBLE_DEVICES"] == "0"


def test_slurm_kernel_specs_request_a_gpu_through_srun():
    specs = _kernel_specs()
    argv = specs["al-annotator-slurm-gpu"]["argv"]
    srun = argv[argv.index("srun"):]
    assert any(a.startswith("--gres=gpu") or a.startswith("--gpus") for a in srun), srun
    assert (KERNELS / "al-annotator-slurm-gpu" / "slurm_kernel.py").is_file()
    trainer = specs["al-annotator-slurm-trainer"]
    assert "--gres=gpu" in trainer["env"]["AL_ANNOTATOR_TRAINER_SRUN_ARGS"]
    assert trainer["env"]["AL_ANNOTATOR_TRAINER_PYTHON"].endswith("srun-python")
    wrapper = (KERNELS / "al-annotator-slurm-trainer" / "srun-python").read_text()
    assert re.search(r"^\s*exec srun ", wrapper, re.M)  # anything but the worker: srun is all there is
    assert re.search(r'^srun "\$\{srun_args\[@\]\}" "\$python" "\$\{args\[@\]\}" &$', wrapper, re.M)  # the worker, stopped by its stop file
    for script in (KERNELS / "al-annotator-slurm-gpu" / "slurm_kernel.py", KERNELS / "al-annotator-slurm-trainer" / "srun-python"):
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """An ``srun`` on PATH that logs its arguments and runs the command here."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "srun.log"
    (bindir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$@" >> {log}\n'
        'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done\n'
        'exec "$@"\n'
    )
    (bindir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def _install_kernels(prefix: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("al_annotator_kernel_install", KERNELS / "install.py")
    kernel_install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernel_install)
    kernel_install.install(list(kernel_install.KERNELS), prefix=str(prefix))
    return prefix / "share" / "jupyter" / "kernels"


def test_install_script_renders_absolute_python_and_paths(tmp_path):
    kdir = _install_kernels(tmp_path / "prefix")
    for name in ("al-annotator-cpu", "al-annotator-gpu", "al-annotator-slurm-gpu", "al-annotator-slurm-trainer"):
        spec = json.loads((kdir / name / "kernel.json").read_text())
        assert spec["argv"][0] == sys.executable
        assert "{resource_dir}" not in json.dumps(spec.get("env", {}))
    trainer = json.loads((kdir / "al-annotator-slurm-trainer" / "kernel.json").read_text())
    assert trainer["env"]["AL_ANNOTATOR_TRAINER_PYTHON"] == str(kdir / "al-annotator-slurm-trainer" / "srun-python")
    assert "@PYTHON@" not in (kdir / "al-annotator-slurm-trainer" / "srun-python").read_text()


def test_slurm_kernel_runs_ipykernel_through_srun(tmp_path, fake_srun):
    """The SLURM kernel: srun starts ipykernel (here: a fake srun), the relay carries the channels."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kdir = _install_kernels(tmp_path / "prefix")
    km = KernelManager(kernel_name="al-annotator-slurm-gpu", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kdir)]))
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out: list[str] = []
        reply = kc.execute_interactive("import os; print('pid', os.getpid())", timeout=30,
                                       output_hook=lambda m: out.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok"
        kernel_pid = int("".join(out).split()[1])
        assert kernel_pid != km.provisioner.process.pid  # ipykernel runs under srun, not as the wrapper
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)
    assert not km.is_alive()
    srun_args = fake_srun.read_text()
    assert "--gres=gpu:1" in srun_args and "-c" in srun_args


def test_srun_python_runs_the_trainer_command_on_cuda(tmp_path, fake_srun):
    kdir = _install_kernels(tmp_path / "prefix")
    wrapper = kdir / "al-annotator-slurm-trainer" / "srun-python"
    env = dict(os.environ, AL_ANNOTATOR_TRAINER_SRUN_ARGS="--gres=gpu:1 --time=1:00:00", SLURM_JOB_ID="123")
    probe = "import os, sys; print(sys.argv[1:], os.environ.get('SLURM_JOB_ID'))"
    out = subprocess.run([str(wrapper), "-c", probe, "x"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['x'] None"  # ran with this interpreter, outside the enclosing job
    assert fake_srun.read_text().startswith("--gres=gpu:1 --time=1:00:00 " + sys.executable)
    # the worker gets --device cuda unless a device is given
    subprocess.run([str(wrapper), "-m", "al_annotator.training.worker", "--help"], env=env, capture_output=True, timeout=120)
    assert fake_srun.read_text().splitlines()[-1].endswith("-m al_annotator.training.worker --help --device cuda")


# ------------------------------------------------------------------------------------------------
# the labextension
# ------------------------------------------------------------------------------------------------
def test_labextension_paths_point_at_the_built_extension():
    (entry,) = J._jupyter_labextension_paths()
    assert entry["dest"] == J.LABEXTENSION_NAME == "al-annotator"
    built = Path(J.__file__).parent / entry["src"]
    assert built == J.labextension_dir() and built.is_dir()
    assert list((built / "static").glob("remoteEntry.*.js")), "no remoteEntry JS: rebuild with `npm run build` in labextension/"


def test_labextension_metadata():
    built = json.loads((BUILT / "package.json").read_text())
    source = json.loads((SOURCE / "package.json").read_text())
    install = json.loads((BUILT / "install.json").read_text())
    assert built["name"] == source["name"] == J.LABEXTENSION_NAME
    assert built["version"] == source["version"]
    assert (BUILT / built["jupyterlab"]["_build"]["load"]).is_file()
    assert built["jupyterlab"]["_build"]["extension"] == "./extension"
    # the built copy is the current source's (a changed package.json needs a rebuild)
    for key in ("dependencies", "main", "style"):
        assert built[key] == source[key], key
    assert {k: v for k, v in built["jupyterlab"].items() if k != "_build"} == source["jupyterlab"]
    assert source["jupyterlab"]["outputDir"] == "../al_annotator/labextension"
    assert "@jupyterlab/builder" in source["devDependencies"]
    for pkg in EXTERNALS:
        assert pkg in source["dependencies"]
        shared = source["jupyterlab"]["sharedPackages"][pkg]
        assert shared["bundled"] is False and shared["singleton"] is True
    assert install == {"packageManager": "python", "packageName": "al-annotator",
                       "uninstallInstructions": install["uninstallInstructions"]}
    assert (SOURCE / "install.json").read_text() == (BUILT / "install.json").read_text()


def test_built_bundle_has_the_commands_and_the_notebook_template():
    js = "\n".join(p.read_text() for p in (BUILT / "static").glob("*.js"))
    for text in ("al-annotator:launch", "al-annotator:open-selected", "Open in AL Annotator", "AL Annotator",
                 "from al_annotator import Annotator", "Annotator(", "_annotator", "project.json", ".nii.gz", ".zarr"):
        assert text in js, text
    # JupyterLab's own modules are consumed from the page (singletons, any 4.x), never bundled;
    # @jupyterlab/application is imported for types only.
    for pkg in ("@jupyterlab/launcher", "@jupyterlab/filebrowser", "@jupyterlab/docmanager", "@jupyterlab/notebook"):
        assert re.search(rf'"default","{re.escape(pkg)}",!1,\[1,4,0,0\]', js), pkg
    assert sum(p.stat().st_size for p in (BUILT / "static").iterdir()) < 100_000


def test_extension_is_found_by_jupyterlab(tmp_path, monkeypatch):
    """Installed (sys.prefix/share/jupyter/labextensions) or, failing that, through lab_command's fallback."""
    from jupyterlab_server.config import get_federated_extensions

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cmd = J.lab_command(None, root_dir=tmp_path, open_browser=False)
    paths = [str(p) for p in [J.labextension_installed()] if p is not None]
    paths = [str(Path(p).parent) for p in paths]
    paths += [a.split("=", 1)[1] for a in cmd if a.startswith("--LabApp.extra_labextensions_path=")]
    exts = get_federated_extensions(paths)
    assert "al-annotator" in exts
    assert exts["al-annotator"]["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")


# ------------------------------------------------------------------------------------------------
# notebooks written from Python
# ------------------------------------------------------------------------------------------------
def test_annotator_notebook_first_cell_and_names(tmp_path):
    (tmp_path / "scan.nii.gz").touch()
    first = J.write_annotator_notebook(tmp_path / "scan.nii.gz")
    second = J.write_annotator_notebook(tmp_path / "scan.nii.gz")
    assert (first.name, second.name) == ("scan_annotator.ipynb", "scan_annotator-1.ipynb")
    nb = json.loads(first.read_text())
    assert nb["cells"][0]["source"] == 'from al_annotator import Annotator\nAnnotator("scan.nii.gz")'
    demo = J.annotator_notebook("al_annotator_demo", create_demo=True)["cells"][0]["source"]
    assert 'create_demo_project("al_annotator_demo")' in demo and demo.endswith('Annotator("al_annotator_demo")')
    with pytest.raises(FileExistsError):
        J.write_notebook(nb, first)


def test_repository_quickstart_is_the_packaged_one():
    repo = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())
    packaged = J.quickstart_notebook()
    assert [(c["cell_type"], c["source"]) for c in repo["cells"]] == [(c["cell_type"], c["source"]) for c in packaged["cells"]], (
        "notebooks/quickstart.ipynb differs from jupyter_ext.quickstart_notebook(): "
        "python -m al_annotator.jupyter_ext quickstart notebooks/quickstart.ipynb --overwrite")


def test_lab_command_is_local_and_keeps_the_token(tmp_path):
    nb = tmp_path / "my notebook.ipynb"
    cmd = J.lab_command(nb, root_dir=tmp_path, open_browser=False, port=9999)
    assert cmd[:4] == [sys.executable, "-m", "jupyterlab", "my notebook.ipynb"]
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--ServerApp.port=9999" in cmd and "--no-browser" in cmd
    assert "--LabApp.default_url=/lab/tree/my%20notebook.ipynb" in cmd
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    assert not any("token" in a.lower() for a in cmd)


def test_launch_demo_does_not_overwrite_the_notebook(tmp_path):
    J.launch_demo(False, directory=tmp_path, exec_lab=False)
    nb = tmp_path / J.QUICKSTART_NAME
    assert (tmp_path / J.DEMO_PROJECT / "project.json").is_file()
    nb.write_text(nb.read_text().replace("quickstart", "my edits"))
    J.launch_demo(False, directory=tmp_path, exec_lab=False)
    assert "my edits" in nb.read_text()


def _server_info(runtime: Path, port: int, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in runtime.glob("jpserver-*.json"):
            info = json.loads(f.read_text())
            if info.get("port") == port:
                try:
                    urllib.request.urlopen(f"{info['url']}api/status?token={info['token']}", timeout=2).read()
                    return info
                except OSError:
                    pass
        time.sleep(0.2)
    raise TimeoutError(f"no Jupyter server on port {port} within {timeout} s")


def _stop_server(proc: subprocess.Popen, log) -> None:
    """End a server started with ``start_new_session=True`` (its whole process group), then close its log."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_launch_demo_serves_the_quickstart(tmp_path):
    """``python -m al_annotator.jupyter_ext demo``: the demo project, the notebook, JupyterLab serving it."""
    port = _free_port()
    runtime = tmp_path / "runtime"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    work = tmp_path / "work"
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "al_annotator.jupyter_ext", "demo", "--no-browser", "--port", str(port), "--dir", str(work)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = _server_info(runtime, port)
        assert info["root_dir"] == str(work) and info["pid"] == proc.pid  # exec'd in place
        assert info["token"]  # JupyterLab's own token, not overridden
        sources = _notebook_source(info["url"].rstrip("/"), info["token"], J.QUICKSTART_NAME)
        assert "create_demo_project(PROJECT)" in sources and "Annotator(PROJECT)" in sources
        assert (work / J.DEMO_PROJECT / "project.json").is_file()
        with pytest.raises(urllib.error.HTTPError) as no_token:  # the token is required
            urllib.request.urlopen(f"{info['url']}api/contents", timeout=5)
        assert no_token.value.code == 403
    finally:
        _stop_server(proc, log)
    printed = (tmp_path / "lab.log").read_text()
    assert f"127.0.0.1:{port}/lab/tree/{J.QUICKSTART_NAME}?token=" in printed


# ------------------------------------------------------------------------------------------------
# binder
# ------------------------------------------------------------------------------------------------
def test_binder_files():
    from packaging.requirements import Requirement

    reqs = []
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    names = {r.name.lower() for r in reqs}
    assert {"jupyterlab", "ipywidgets", "anywidget"} <= names
    assert not names & {"torch", "torchvision", "nvidia-cudnn-cu12"}  # torch comes from the CPU index, in postBuild
    assert re.fullmatch(r"python-3\.\d+\s*", (BINDER / "runtime.txt").read_text())
    post = (BINDER / "postBuild").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in post and '"torch>=' in post
    assert 'pip install --no-cache-dir ".[demo]"' in post  # the core alone has neither the widget nor the trainer
    assert "al_annotator.jupyter_ext demo --print-command" in post
    assert "/lab/tree/al_annotator_quickstart.ipynb" in post
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert path.stat().st_mode & stat.S_IXUSR, f"binder/{script} must be executable"
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert 'exec "$@"' in (BINDER / "start").read_text()


# ------------------------------------------------------------------------------------------------
# a real browser
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a volume, a project and a text file in its root."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    import numpy as np

    root = tmp_path / "root"
    root.mkdir()
    np.save(root / "scan.npy", np.zeros((4, 8, 8), np.uint8))
    (root / "proj").mkdir()
    (root / "proj" / "project.json").write_text("{}")
    (root / "notes.txt").write_text("not a volume")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    port, token = _free_port(), "al-annotator-test"
    cmd = J.lab_command(None, root_dir=root, open_browser=False, port=port, extra=[f"--IdentityProvider.token={token}"])
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _server_info(tmp_path / "runtime", port)
        yield base, token, root, tmp_path
    finally:
        _stop_server(proc, log)


def _notebook_source(base: str, token: str, path: str) -> str:
    with urllib.request.urlopen(f"{base}/api/contents/{path}?token={token}", timeout=10) as r:
        model = json.load(r)
    return "".join("".join(c["source"]) for c in model["content"]["cells"])


@pytest.mark.browser
def test_launcher_card_and_context_menu_open_an_annotator_notebook(lab):
    from playwright.sync_api import sync_playwright

    base, token, root, tmp_path = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/lab?token={token}&reset")
            card = page.locator('.jp-LauncherCard:has-text("AL Annotator")')
            card.wait_for(timeout=90_000)
            page.screenshot(path=str(tmp_path / "launcher.png"))

            # launcher card -> dialog (first candidate: the project) -> a new notebook that runs
            card.click()
            page.locator(".jp-Dialog .jp-mod-accept").click(timeout=30_000)
            page.locator(".jp-NotebookPanel .jp-InputPrompt:has-text('[1]')").first.wait_for(timeout=90_000)
            assert (root / "proj_annotator.ipynb").is_file()
            assert 'from al_annotator import Annotator\nAnnotator("proj")' in _notebook_source(base, token, "proj_annotator.ipynb")

            # right-click a volume: "Open in AL Annotator" -> scan_annotator.ipynb
            page.locator('.jp-DirListing-item:has-text("scan.npy")').first.click(button="right")
            item = page.locator('.lm-Menu-item[data-command="al-annotator:open-selected"]')
            item.wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / "context_menu.png"))
            item.click()
            page.locator(".lm-TabBar-tab:has-text('scan_annotator.ipynb')").wait_for(timeout=60_000)
            assert 'Annotator("scan.npy")' in _notebook_source(base, token, "scan_annotator.ipynb")

            # not offered on a file that is not a volume
            page.keyboard.press("Escape")
            page.locator('.jp-DirListing-item:has-text("notes.txt")').first.click(button="right")
            page.locator('.lm-Menu-item[data-command="filebrowser:rename"]').wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / "context_menu_txt.png"))
            assert not page.locator('.lm-Menu-item[data-command="al-annotator:open-selected"]').is_visible()
        finally:
            browser.close()
