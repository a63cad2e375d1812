"""``napari PROJECT_DIR`` opens the project in the dock, with no "Choose reader" dialog.

Why a chooser appeared: npe2 offers every reader that declares ``accepts_directories`` for any
folder (patterns are not looked at for folders) and napari's built-in reader accepts folders, so a
project folder has two readers; without a ``settings.plugins.extension2reader`` preference for it,
``viewer.open`` raises ``MultipleReaderError`` and the command line's ``QtViewer._qt_open`` pops up
the dialog. The fix: al_annotator records the folder's reader preference (``prefer_this_reader``)
whenever napari opens or creates a project.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install 'al-annotator[napari]')")

from al_annotator.core import Session  # noqa: E402
from test_napari import _skip_without_qt, gui, phantom, plugin, project  # noqa: E402,F401


@pytest.fixture
def reader_settings():
    """napari's reader preferences, restored after the test."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    saved = dict(plugins.extension2reader)
    plugins.extension2reader = {}
    yield plugins
    plugins.extension2reader = saved


def _key(path) -> str:
    return os.path.realpath(path) + os.sep


@pytest.fixture
def chooser(monkeypatch):
    """Calls of napari's "Choose reader" dialog from ``QtViewer._qt_open`` (what ``napari PATH`` runs)."""
    import napari._qt.qt_viewer as qt_viewer

    shown = []
    monkeypatch.setattr(qt_viewer, "handle_gui_reading", lambda paths, *a, **kw: shown.append(list(paths)))
    return shown


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_napari_project_dir_opens_in_the_dock_without_a_reader_chooser(gui, plugin, make_napari_viewer, project,
                                                                      reader_settings, chooser):
    from napari.errors import MultipleReaderError
    from napari.plugins import _npe2
    from napari.plugins.utils import get_preferred_reader

    from al_annotator.napari._io import prefer_this_reader

    viewer = make_napari_viewer()
    # the cause: two readers claim any folder, and there is no preference for this one
    assert {"napari", "al-annotator"} <= set(_npe2.get_readers(str(project)))
    assert get_preferred_reader(str(project)) is None
    with pytest.raises(MultipleReaderError):
        viewer.open(str(project), plugin=None)  # (viewer.open's default, plugin="napari", forces the built-in reader)
    viewer.window._qt_viewer._qt_open([str(project)], stack=False)  # `napari PROJECT_DIR`
    assert chooser == [[str(project)]]  # the dialog would have popped up
    # the fix: the folder's preference names this plugin, as "Remember this choice" would
    assert prefer_this_reader(project)
    assert reader_settings.extension2reader == {_key(project): "al-annotator"}
    assert get_preferred_reader(str(project)) == get_preferred_reader(str(project) + "/") == "al-annotator"
    chooser.clear()
    viewer.window._qt_viewer._qt_open([str(project)], stack=False)
    assert chooser == []
    assert viewer.open(str(project), plugin=None) == []  # the dock added the layers (it already shows the project)
    _, dock = viewer.window.add_plugin_dock_widget("al-annotator", "AL Annotator")  # the one the reader opened
    assert dock.session is not None and dock.session.volume.path == str(project.absolute())
    assert [layer.name for layer in viewer.layers] == [f"proj {k}" for k in ("image", "prediction", "uncertainty", "labels")]
    dock.close_project()


@pytest.mark.gui
@pytest.mark.skipif("_skip_without_qt()", reason="needs a display for Qt")
def test_opening_or_creating_a_project_in_the_dock_remembers_its_reader(gui, plugin, make_napari_viewer, project, phantom,
                                                                       reader_settings, chooser):
    from napari.plugins.utils import get_preferred_reader

    from al_annotator.napari._io import prefer_this_reader
    from al_annotator.napari._widget import AnnotatorWidget

    viewer = make_napari_viewer()
    dock = AnnotatorWidget(viewer, poll_ms=0)
    viewer.window.add_dock_widget(dock, name="AL Annotator")
    dock.open_project(project)
    assert get_preferred_reader(str(project)) == "al-annotator"
    created = project.parent / "created"
    dock.create_project(created, phantom.image)
    dock.wait_idle()
    assert get_preferred_reader(str(created)) == "al-annotator"
    dock.close_project()
    viewer.window._qt_viewer._qt_open([str(created)], stack=False)  # later: `napari created/`
    assert chooser == []
    _, opened = viewer.window.add_plugin_dock_widget("al-annotator", "AL Annotator")
    assert opened.session is not None and opened.session.volume.path == str(created.absolute())
    opened.close_project()
    # a reader the user chose for a folder is kept
    other = project.parent / "mine"
    other.mkdir()
    reader_settings.extension2reader = {**reader_settings.extension2reader, _key(other): "napari"}
    assert not prefer_this_reader(other) and reader_settings.extension2reader[_key(other)] == "napari"


def test_reader_without_a_window_opens_a_read_only_session(project):
    """No viewer: the project's image and labels through ``Session.open(path, read_only=True)``;
    the labels layer data cannot be written, and a writer can open the project meanwhile."""
    from al_annotator.napari._io import get_reader

    reader = get_reader(str(project))
    assert reader is not None and get_reader(str(project / "project.json")) is reader
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = reader(str(project))
    assert (image_kind, labels_kind) == ("image", "labels") and not hasattr(labels, "__setitem__")
    with pytest.raises(TypeError):
        image.base[0, 0, 0] = 1  # a ReadOnlyArray of the session
    writer = Session.open(project, author="ana")  # the reader holds no writer lock
    writer.paint(np.arange(5), "bone")
    assert int(np.asarray(labels[writer.current.selection()]).reshape(-1)[:5].sum()) == 10  # lazy: reads the store
    writer.close()
    assert image_meta["contrast_limits"] == list(writer.volume.display_window)


def test_a_project_made_by_the_cli_opens_in_napari_without_a_chooser(tmp_path):
    """`al-annotator init` records this plugin as napari's reader for the new folder, so the first
    `napari PROJECT_DIR` already picks it (in a fresh process: napari reads its settings file)."""
    import subprocess
    import sys

    import numpy as np

    vol = tmp_path / "vol.npy"
    np.save(vol, np.zeros((4, 16, 16), np.uint8))
    env = dict(os.environ, NAPARI_CONFIG=str(tmp_path / "napari" / "settings.yaml"))
    out = subprocess.run([sys.executable, "-m", "al_annotator.cli", "init", str(tmp_path / "proj"), "--volume", str(vol)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "opens it in the AL Annotator dock" in out.stdout
    code = ("from napari.plugins.utils import get_preferred_reader; import sys; "
            f"print(get_preferred_reader({str(tmp_path / 'proj')!r}))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert got.stdout.strip() == "al-annotator", got.stderr
    skip = subprocess.run([sys.executable, "-m", "al_annotator.cli", "init", str(tmp_path / "other"), "--volume", str(vol),
                           "--no-napari"], capture_output=True, text=True, env=env, timeout=300)
    assert skip.returncode == 0 and "napari" not in skip.stdout
