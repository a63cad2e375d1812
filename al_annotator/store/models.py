"""Model versions in a project: what the trainer publishes and every front end reads.

A version ``N`` lives in ``models/vNNNN/`` (checkpoint, per-slice scores, embeddings, metrics)
and in the zarr group ``data.zarr/models/vNNNN`` (probabilities, prediction, confidence).

Publishing is crash-safe at every step (a SIGKILL anywhere leaves a project the next trainer
start repairs, and never a half-written version that a reader can see):

1. the writer reserves ``N`` by creating ``models/vNNNN.partial`` (``N`` is above every published
   version *and* every directory or zarr group on disk, so a leftover never collides), and writes
   its files there and its arrays into the zarr group;
2. ``vNNNN.partial`` is renamed to ``vNNNN`` (atomic);
3. ``models/index.json`` is atomically replaced to list ``N``: from here on ``N`` is published;
4. ``models/current.json`` is atomically replaced to name ``N`` (a trainer start rolls it forward
   if a kill fell between 3 and 4);
5. versions beyond ``keep`` lose their checkpoint and volume outputs, except the one a front end
   may still display (the previous current version).

:func:`clean_unpublished` removes what a kill before step 3 left. :func:`begin_version` is the one
writer: ``with begin_version(store) as out: ...`` writes into ``out.partial_dir`` and
``out.group()``, publishes on a normal exit and discards everything on an error.

A damaged ``index.json`` or ``current.json`` (not JSON, or not the shape written here) raises
:class:`~al_annotator.errors.StoreIntegrityError` naming the file and the remedy
(``al-annotator check PROJECT --repair`` rebuilds both from the version directories).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreIntegrityError
from .chunkread import ChunkArray, chunk_reader

__all__ = [
    "CURRENT_FILE",
    "INDEX_FILE",
    "VersionWriter",
    "begin_version",
    "check_models",
    "repair_models",
    "clean_unpublished",
    "current_model",
    "list_model_versions",
    "model_outputs",
    "pin_version",
    "pinned_versions",
    "next_version",
    "prediction_array",
    "publish_version",
    "read_scores",
    "update_version_meta",
    "version_dir",
    "version_name",
]

INDEX_FILE = "models/index.json"
CURRENT_FILE = "models/current.json"
METRICS_FILE = "metrics.json"
_VERSION_DIR = re.compile(r"^v(\d+)(?:\..*)?$")  # v0003, v0003.partial
_VERSION_GROUP = re.compile(r"^v(\d+)$")


# ---------------------------------------------------------------------- reading
def _remedy(store: Any) -> str:
    return (f"run `al-annotator check {store.backend.description} --repair` to rebuild it from the model "
            "version directories (or delete it to forget the trained models)")


def _read_doc(store: Any, name: str) -> Any | None:
    """A JSON document of the models folder; a damaged one raises a StoreIntegrityError naming it."""
    where = f"{store.backend.description}/{name}"
    try:
        return store.backend.read_json(name)
    except StoreIntegrityError as exc:  # the backend's message names the file; ours names the models remedy
        cause = exc.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        raise StoreIntegrityError(f"{where} is damaged ({why}); {_remedy(store)}") from exc
    except (ValueError, OSError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreIntegrityError(f"{where} is damaged ({type(exc).__name__}: {exc}); {_remedy(store)}") from exc


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    v = entry.get("version")
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _shape_error(store: Any, name: str, why: str) -> StoreIntegrityError:
    return StoreIntegrityError(f"{store.backend.description}/{name} is damaged ({why}); {_remedy(store)}")


def _read_index(store: Any) -> dict[str, Any]:
    doc = _read_doc(store, INDEX_FILE)
    if doc is None:
        return {"versions": []}
    if not isinstance(doc, dict) or not isinstance(doc.get("versions"), list):
        raise _shape_error(store, INDEX_FILE, 'expected {"versions": [...]}, got ' + _abbrev(doc))
    for entry in doc["versions"]:
        if not _valid_entry(entry):
            raise _shape_error(store, INDEX_FILE, "a version entry without a positive integer 'version': " + _abbrev(entry))
    return doc


def _abbrev(obj: Any, n: int = 80) -> str:
    text = json.dumps(obj, default=repr)
    return text if len(text) <= n else text[: n - 3] + "..."


def list_model_versions(store: Any) -> list[dict[str, Any]]:
    """Published model versions, oldest first (each: version, created, metrics...)."""
    return sorted(_read_index(store)["versions"], key=lambda v: v["version"])


def current_model(store: Any) -> dict[str, Any] | None:
    """The newest published model version, or ``None`` before the first round."""
    doc = _read_doc(store, CURRENT_FILE)
    if doc is not None and not _valid_entry(doc):
        raise _shape_error(store, CURRENT_FILE, "expected a version entry with a positive integer 'version', got " + _abbrev(doc))
    return doc


def prediction_array(store: Any, version: int | None = None) -> Any:
    """The zarr array of predicted labels (values 1..C) of a model version (default: current)."""
    if version is None:
        cur = current_model(store)
        if cur is None:
            raise InputError(
                f"{store.backend.description} has no predictions yet: train a model "
                "(al-annotator train PROJECT --rounds 1) and run al-annotator predict PROJECT"
            )
        version = int(cur["version"])
    key = f"models/v{version:04d}/prediction"
    if key not in store.root:
        raise InputError(f"model version {version} has no full-volume prediction; run al-annotator predict PROJECT")
    return store.root[key]


def version_name(version: int) -> str:
    return f"v{int(version):04d}"


def version_dir(store: Any, version: int) -> Path:
    """The directory of a published version's files (checkpoint, scores, metrics)."""
    if store.backend.root is None:
        raise InputError("model versions need a project directory (an in-memory project cannot host a trainer)")
    return store.backend.root / "models" / version_name(version)


def _root(store: Any) -> Path:
    if store.backend.root is None:
        raise InputError("model versions need a project directory (an in-memory project cannot host a trainer)")
    return store.backend.root


def _versions_on_disk(store: Any) -> set[int]:
    """Every version number a directory or zarr group on disk uses, published or not."""
    root = store.backend.root
    found: set[int] = set()
    if root is None:
        return found
    for folder, pattern in ((root / "models", _VERSION_DIR), (root / "data.zarr" / "models", _VERSION_GROUP)):
        if folder.is_dir():
            for p in folder.iterdir():
                m = pattern.match(p.name)
                if m:
                    found.add(int(m.group(1)))
    return found


def next_version(store: Any) -> int:
    """A version number above every published one and every leftover directory or zarr group."""
    used = {v["version"] for v in list_model_versions(store)} | _versions_on_disk(store)
    cur = current_model(store)
    if cur is not None:
        used.add(cur["version"])
    return max(used, default=0) + 1


# ---------------------------------------------------------------------- repair
def clean_unpublished(store: Any) -> list[str]:
    """Repair what a trainer killed mid-publish left; returns what was removed or rolled forward.

    * ``models/vNNNN.partial`` dirs and temporary JSON files: removed;
    * ``models/vNNNN`` dirs and ``data.zarr/models/vNNNN`` groups of versions above the last
      published one (a kill between the rename and the index update): removed;
    * ``current.json`` naming an older version than the index's newest (a kill between the index
      and the current update): rolled forward to the newest.

    Versions at or below the last published one that the index does not list are left alone
    (:func:`next_version` skips past them, so they never collide).
    """
    removed: list[str] = []
    root = store.backend.root
    if root is None:
        return removed
    versions = list_model_versions(store)
    published = {v["version"] for v in versions}
    last = max(published, default=0)
    cur = current_model(store)
    if versions and (cur is None or cur["version"] < last) and (root / "models" / version_name(last)).is_dir():
        _write(store, CURRENT_FILE, versions[-1])
        removed.append(f"{CURRENT_FILE} -> {version_name(last)} (rolled forward)")
    models_dir = root / "models"
    if models_dir.is_dir():
        for p in models_dir.iterdir():
            m = _VERSION_DIR.match(p.name)
            stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
            dead = m is not None and (p.name.endswith(".partial") or (p.name == version_name(int(m.group(1))) and int(m.group(1)) > last))
            if stale_tmp or (dead and p.is_dir()):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(str(p))
    zdir = root / "data.zarr" / "models"
    if zdir.is_dir():
        for p in zdir.iterdir():
            m = _VERSION_GROUP.match(p.name)
            if m and p.is_dir() and int(m.group(1)) not in published and int(m.group(1)) > last:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(str(p))
    return removed


def check_models(store: Any) -> list[str]:
    """Problems of the models folder: a damaged ``index.json``/``current.json``, a current version
    the index does not list, a listed version without its directory. :func:`repair_models` fixes
    the first two."""
    if store.backend.root is None:
        return []
    try:
        versions = list_model_versions(store)
        cur = current_model(store)
    except StoreIntegrityError as exc:
        return [str(exc)]
    problems: list[str] = []
    published = {v["version"] for v in versions}
    if cur is not None and cur["version"] not in published:
        problems.append(f"{CURRENT_FILE} names model v{cur['version']}, which {INDEX_FILE} does not list")
    for v in versions:
        if not version_dir(store, v["version"]).is_dir():
            problems.append(f"model v{v['version']} is listed in {INDEX_FILE} but models/{version_name(v['version'])} is missing")
    return problems


def repair_models(store: Any) -> list[str]:
    """Rebuild ``index.json`` and ``current.json`` from the ``models/vNNNN/metrics.json`` files
    (the old files are kept as ``*.damaged``); returns what was done."""
    entries = _rebuild_index(store)
    listed = ", ".join(version_name(e["version"]) for e in entries) or "none"
    return [f"rebuilt {INDEX_FILE} and {CURRENT_FILE} from the model directories (versions: {listed}); "
            "the old files were kept as *.damaged"]


def _rebuild_index(store: Any) -> list[dict[str, Any]]:
    root = _root(store)
    entries = []
    for p in sorted((root / "models").iterdir()) if (root / "models").is_dir() else []:
        m = _VERSION_GROUP.match(p.name)
        if not (m and p.is_dir()):
            continue
        try:
            meta = json.loads((p / METRICS_FILE).read_text())
        except (OSError, ValueError):
            meta = {}
        entries.append(dict(meta if isinstance(meta, dict) else {}, version=int(m.group(1))))
    for name in (INDEX_FILE, CURRENT_FILE):
        path = root / name
        if path.exists() or path.is_symlink():
            aside = path.with_name(path.name + ".damaged")
            n = 0
            while aside.exists():
                n += 1
                aside = path.with_name(f"{path.name}.damaged.{n}")
            os.replace(path, aside)
    entries.sort(key=lambda e: e["version"])
    _write(store, INDEX_FILE, {"versions": entries})
    if entries:
        _write(store, CURRENT_FILE, entries[-1])
    return entries


def _write(store: Any, name: str, obj: Any) -> None:
    store.backend.write_json(name, obj, fsync=bool(getattr(store.backend, "fsync", False)))


# ---------------------------------------------------------------------- publishing
def publish_version(store: Any, version: int, meta: dict[str, Any], *, keep: int = 3) -> None:
    """Make ``version`` current (steps 2 to 5 of the module docstring).

    Its files are in ``models/vNNNN.partial`` (renamed into place here) or already in
    ``models/vNNNN``. A leftover unpublished ``models/vNNNN`` in the way is replaced; publishing
    a version again replaces its index entry. Older versions beyond ``keep`` lose their
    checkpoint and volume outputs (their scores and metrics stay, for the learning curve), but
    never the version ``current.json`` named before (a front end may be displaying it).
    """
    version = int(version)
    root = _root(store)
    versions = list_model_versions(store)
    previous = current_model(store)
    republish = any(v["version"] == version for v in versions)
    partial = root / "models" / (version_name(version) + ".partial")
    final = root / "models" / version_name(version)
    if partial.exists():
        if final.exists():
            if republish:
                raise StoreIntegrityError(f"model v{version} is already published in {final}; a new round must use next_version()")
            shutil.rmtree(final)  # an unpublished leftover of a killed trainer must not block this one
        os.replace(partial, final)
    entry = dict(meta, version=version)
    index = _read_index(store)
    index["versions"] = [v for v in versions if v["version"] != version] + [entry]
    _write(store, INDEX_FILE, index)
    _write(store, CURRENT_FILE, entry)
    protect = {version} | ({previous["version"]} if previous else set()) | pinned_versions(store)
    _prune(root, index["versions"], max(1, int(keep)), protect)


# ---------------------------------------------------------------------- pins
#: A pin older than this is ignored (its front end died without unpinning); live ones re-pin hourly.
PIN_STALE_S = 24 * 3600.0
PINS_DIR = "models/pins"


def pin_version(store: Any, holder: str, version: int | None) -> None:
    """Record that ``holder`` (a session id) displays ``version``, so pruning keeps its outputs.
    ``version=None`` removes the pin. In-memory and read-only stores keep no pins."""
    import socket
    import time

    if store.backend.root is None or getattr(store, "read_only", False):
        return
    holder = "".join(c for c in str(holder) if c.isalnum() or c in "-_")[:64] or "anonymous"
    path = store.backend.root / PINS_DIR / f"{holder}.json"
    if version is None:
        path.unlink(missing_ok=True)
        return
    store.backend.write_json(f"{PINS_DIR}/{holder}.json",
                             {"version": int(version), "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()})


def pinned_versions(store: Any) -> set[int]:
    """Versions some live front end displays (fresh pins whose process, on this host, still runs)."""
    import socket
    import time

    root = store.backend.root
    if root is None or not (root / PINS_DIR).is_dir():
        return set()
    out, now, host = set(), time.time(), socket.gethostname()
    for path in (root / PINS_DIR).glob("*.json"):
        try:
            pin = store.backend.read_json(f"{PINS_DIR}/{path.name}")
            version, when = int(pin["version"]), float(pin["time"])
        except (StoreIntegrityError, KeyError, TypeError, ValueError):
            continue  # a damaged pin protects nothing
        if now - when > PIN_STALE_S:
            continue
        if pin.get("host") == host and isinstance(pin.get("pid"), int):
            try:
                os.kill(pin["pid"], 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
        out.add(version)
    return out


def model_outputs(store: Any, version: int) -> dict[str, Any]:
    """The volume outputs a published version has, by name (``prediction``, ``confidence``,
    ``probabilities``): zarr arrays, read lazily (basic selections through :mod:`.chunkread`). Missing ones are left out. The one reader of the
    ``data.zarr/models/vNNNN`` layout that :class:`VersionWriter` writes."""
    out = {}
    for name in ("prediction", "confidence", "probabilities"):
        try:
            arr = store.root[f"models/{version_name(version)}/{name}"]
            reader = chunk_reader(arr, cache_bytes=0)  # decodes into one buffer per read (zarr: a fresh one per chunk)
            out[name] = arr if reader is None else ChunkArray(arr, reader)
        except KeyError:
            continue
        except Exception as exc:  # noqa: BLE001 - damaged zarr metadata
            raise StoreIntegrityError(
                f"the {name} of model v{version} in {store.backend.description}/data.zarr cannot be opened "
                f"({exc.__class__.__name__}: {exc}); {_remedy(store)}"
            ) from exc
    return out


def update_version_meta(store: Any, version: int, meta: dict[str, Any]) -> None:
    """Replace the index entry of a published ``version`` (and ``current.json`` when it names it),
    e.g. after ``al-annotator predict`` added full-volume outputs."""
    version = int(version)
    index = _read_index(store)
    if not any(v["version"] == version for v in index["versions"]):
        raise InputError(f"model v{version} is not published in {store.backend.description}/{INDEX_FILE}")
    entry = dict(meta, version=version)
    index["versions"] = [entry if v["version"] == version else v for v in index["versions"]]
    _write(store, INDEX_FILE, index)
    cur = current_model(store)
    if cur is not None and cur["version"] == version:
        _write(store, CURRENT_FILE, entry)


def _prune(root: Path, versions: list[dict[str, Any]], keep: int, protect: set[int]) -> None:
    ordered = sorted(versions, key=lambda v: v["version"])
    for old in ordered[:-keep]:
        if old["version"] in protect:
            continue
        name = version_name(old["version"])
        shutil.rmtree(root / "data.zarr" / "models" / name, ignore_errors=True)
        ckpt = root / "models" / name / "checkpoint.pt"
        ckpt.unlink(missing_ok=True)


class VersionWriter:
    """Writes one new model version; use :func:`begin_version`.

    Attributes
    ----------
    version
        The reserved version number.
    partial_dir
        ``models/vNNNN.partial``: write the checkpoint, scores and metrics here.
    group_path
        ``models/vNNNN``: the zarr group (under ``store.root``) for the volume outputs;
        :meth:`group` opens it.
    meta
        The index entry to publish (``created``, ``metrics``...); set it before the block ends.
    """

    def __init__(self, store: Any, *, keep: int = 3) -> None:
        self.store = store
        self.keep = keep
        self.version: int = 0
        self.meta: dict[str, Any] | None = None
        self.published = False
        self._abandoned = False

    @property
    def name(self) -> str:
        return version_name(self.version)

    @property
    def partial_dir(self) -> Path:
        return _root(self.store) / "models" / (self.name + ".partial")

    @property
    def group_path(self) -> str:
        return f"models/{self.name}"

    def group(self) -> Any:
        """The zarr group of this version's volume outputs (created on first use)."""
        return self.store.root.require_group(self.group_path)

    def abandon(self) -> None:
        """Discard this version at the end of the block instead of publishing it (e.g. on a stop request)."""
        self._abandoned = True

    def __enter__(self) -> "VersionWriter":
        models = _root(self.store) / "models"
        models.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            self.version = next_version(self.store)
            try:
                os.mkdir(self.partial_dir)  # exclusive: the reservation of this number
            except FileExistsError:
                continue
            return self
        raise StoreIntegrityError(f"could not reserve a new model version in {models}; remove leftover v*.partial folders")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and not self._abandoned:
            meta = {"created": time.time()} if self.meta is None else self.meta
            try:
                publish_version(self.store, self.version, meta, keep=self.keep)
            except BaseException:
                self._discard()
                raise
            self.published = True
        else:
            self._discard()
        return False

    def _discard(self) -> None:
        root = _root(self.store)
        try:
            if self.version in {v["version"] for v in list_model_versions(self.store)}:
                return  # published after all (the error came later): keep it
        except StoreIntegrityError:
            return  # leave it for clean_unpublished once the index is repaired
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        shutil.rmtree(root / "models" / self.name, ignore_errors=True)
        shutil.rmtree(root / "data.zarr" / "models" / self.name, ignore_errors=True)


def begin_version(store: Any, *, keep: int = 3) -> VersionWriter:
    """The one writer of a new model version: publishes on a normal exit, cleans up on an error.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.store import create_project
    >>> from al_annotator.store.models import begin_version, current_model
    >>> store = create_project(getfixture("tmp_path") / "p", np.zeros((4, 8, 8), np.uint8), classes="a,b")  # doctest: +SKIP
    >>> with begin_version(store) as out:                                      # doctest: +SKIP
    ...     (out.partial_dir / "checkpoint.pt").write_bytes(b"...")
    ...     out.meta = {"created": 0.0, "metrics": {}}
    >>> current_model(store)["version"]                                        # doctest: +SKIP
    1
    """
    return VersionWriter(store, keep=keep)


def read_scores(store: Any, version: int | None = None):
    """The scored candidate slices of a version (default: current) as
    :class:`~al_annotator.acquisition.SliceCandidates`; ``None`` before the first version."""
    import numpy as np

    from ..acquisition.pool import SliceCandidates

    cur = current_model(store) if version is None else {"version": version}
    if cur is None:
        return None
    path = version_dir(store, cur["version"]) / "scores.npz"
    if not path.exists():
        raise InputError(f"model version {cur['version']} has no scores file ({path})")
    try:
        with np.load(path) as data:
            return SliceCandidates.from_arrays({k: data[k] for k in data.files})
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise StoreIntegrityError(f"the scores of model v{cur['version']} ({path}) are unreadable ({type(exc).__name__}: {exc}); "
                                  "train a new round (al-annotator train PROJECT --rounds 1) to replace them") from exc
