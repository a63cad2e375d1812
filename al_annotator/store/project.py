"""The project store: one directory (or memory) holding everything a project is.

Layout of a project directory::

    PROJECT/
      project.json      schema version, classes, colours, spacing, volume facts, display window
      data.zarr/        zarr v3 group
        image           (Z, Y, X) original intensities, 64^3 chunks (all three slice axes read fast)
        labels          (Z, Y, X) uint8, 0 = unlabelled, class i = i + 1; same chunks
        imported_labels (Z, Y, X) uint8, the labels imported at creation (the base the log replays on)
        pyramid/k       the image averaged over 2^k cubes, for zoomed-out views (see :mod:`.pyramid`)
        models/vNNNN/   probabilities (C, Z, Y, X) float16, prediction uint8, confidence (written by the trainer)
      edits.log         append-only edit log (see :mod:`al_annotator.store.editlog`)
      state.json        the log position the labels reflect, slice states, voxel counts per class
      models/           checkpoints, per-slice scores, embeddings, current.json (see :mod:`.models`)
      .lock             writer lock (flock)

Durability: :meth:`ProjectStore.apply_edit` appends the edit to the log (one ``write``, fsync'ed)
before it touches the labels; opening a project replays whatever the labels missed.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import SCHEMA_VERSION, ProjectConfig
from ..errors import (
    InputError,
    LabelValueError,
    ProjectExistsError,
    ProjectNotFoundError,
    StoreIntegrityError,
)
from ..types import AXES, EditAtom, SliceRef
from .backend import LocalBackend, MemoryBackend
from .chunkread import chunk_reader
from .editlog import EditLog, LogRecord, ScanResult, damaged_message, scan_records
from .pyramid import build_pyramid, open_levels, pyramid_bytes, pyramid_levels
from .perms import set_project_dir_mode, share_tree

__all__ = ["ProjectStore", "create_project", "open_project", "SliceState", "DEFAULT_CHUNKS", "PROJECT_FILE"]

PROJECT_FILE = "project.json"
STATE_FILE = "state.json"
#: Chosen by measurement (benchmarks/bench_store.py): 64^3 chunks read a 512x512 slice along z, y
#: or x in ~20-30 ms; (1, Y, X) chunks read z in 1 ms but y and x in ~400 ms.
DEFAULT_CHUNKS = (64, 64, 64)
SLICE_STATES = ("unlabelled", "in_progress", "annotated")


@dataclass(frozen=True, slots=True)
class SliceState:
    """Annotation state of one slice."""

    ref: SliceRef
    state: str
    by: str = ""
    at: float = 0.0


class LabelsView:
    """:attr:`ProjectStore.labels_view`: indexing reads the saved labels through the store's fast path."""

    __slots__ = ("_store",)

    def __init__(self, store: "ProjectStore") -> None:
        self._store = store

    shape = property(lambda self: tuple(self._store.labels.shape))
    dtype = property(lambda self: np.dtype(self._store.labels.dtype))
    chunks = property(lambda self: tuple(self._store.labels.chunks))
    ndim = property(lambda self: len(self._store.labels.shape))

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._store.read_labels(key)

    def __repr__(self) -> str:
        return f"LabelsView(shape={self.shape})"


def _default_author() -> str:
    return os.environ.get("AL_ANNOTATOR_USER") or os.environ.get("USER") or os.environ.get("JUPYTERHUB_USER") or "anonymous"


@dataclass(frozen=True)
class _ArrayVolume:
    """An in-memory array seen through the same attributes as :class:`al_annotator.io.VolumeData`."""

    array: Any
    spacing: tuple[float, float, float] | None = None
    spacing_unit: str | None = None
    format: str = "array"
    source: str = "<array>"


def _as_volume(volume: Any, **read_kw):
    """Accept a path, a VolumeData or an array; return (volume, close)."""
    if isinstance(volume, (str, os.PathLike)):
        from ..io import read_volume

        vol = read_volume(volume, **read_kw)
        return vol, vol.close
    if hasattr(volume, "array") and hasattr(volume, "source"):
        return volume, lambda: None
    if isinstance(volume, (list, tuple)):
        volume = np.asarray(volume)
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        raise InputError(f"a volume must be a path, a VolumeData or an array, got {type(volume).__name__}")
    return _ArrayVolume(volume), lambda: None


def _check_volume_array(arr: Any, what: str = "volume") -> None:
    shape = tuple(getattr(arr, "shape", ()))
    if len(shape) != 3:
        raise InputError(
            f"the {what} has shape {shape} ({len(shape)}D); a project needs a 3D (Z, Y, X) volume. "
            "For a 2D image add a z axis (array[None]); for 4D data pick a channel (--channel K)."
        )
    if min(shape) == 0:
        raise InputError(f"the {what} is empty: shape {shape}")
    dt = np.dtype(arr.dtype)
    if dt.kind not in "biuf":
        raise InputError(f"the {what} has dtype {dt}, which is not numeric; convert it to an integer or float type")


class ProjectStore:
    """An open project. Create with :func:`create_project`, open with :func:`open_project`.

    Examples
    --------
    >>> import numpy as np
    >>> from al_annotator.store import create_project
    >>> store = create_project(None, np.zeros((8, 16, 16), np.uint16), classes=("background", "bone"))
    >>> atom = store.paint(SliceRef("z", 3), np.array([0, 1, 2]), "bone")
    >>> int(store.read_slice(SliceRef("z", 3), "labels")[0, :3].sum())
    6
    """

    def __init__(self, backend: LocalBackend | MemoryBackend, *, author: str | None = None, session: str | None = None,
                 read_only: bool = False, _replay: bool = True) -> None:
        import zarr

        self.backend = backend
        self.author = author or _default_author()
        #: A read-only store (the napari reader, a viewer of someone else's project) writes nothing:
        #: no lock, no recovery writes, no edits; labels a crash left behind the log read as they are.
        self.read_only = bool(read_only)
        #: Undo and redo stacks belong to one open store (a kernel, a napari window): two sessions of
        #: the same user never undo each other's strokes. Pass an earlier ``session`` to resume its stacks.
        self.session = str(session) if session else uuid.uuid4().hex[:12]
        #: What opening found and fixed or set aside (reported by ``info`` and ``check``).
        self.repairs: list[str] = []
        backend.check_no_symlinks()
        doc = self._read_project_doc()
        self._doc = doc
        try:
            self.config = ProjectConfig.from_json(doc["config"])
            self.shape: tuple[int, int, int] = tuple(int(n) for n in doc["volume"]["shape"])  # type: ignore[assignment]
            if len(self.shape) != 3 or min(self.shape) < 1:
                raise ValueError(f"volume shape {self.shape}")
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreIntegrityError(
                f"{backend.description}/{PROJECT_FILE} is damaged: {exc.__class__.__name__}: {exc}. Restore it from a backup "
                f"(a copy is kept as {PROJECT_FILE}.bak since this version)"
            ) from exc
        try:
            self.root = zarr.open_group(store=backend.zarr_store("r" if read_only else "r+"), mode="r" if read_only else "r+")
            # write_empty_chunks is a runtime setting that reopening drops: keep every chunk on disk
            # (an undo that empties a chunk must not delete it; a missing chunk means damage)
            self.image = self.root["image"].with_config({"write_empty_chunks": True})
            self.labels = self.root["labels"].with_config({"write_empty_chunks": True})
            try:
                self._imported = self.root["imported_labels"]
            except KeyError:
                self._imported = None
            #: Coarse image levels ``{k: array}`` for zoomed-out reads (:mod:`.pyramid`); empty when none.
            self.pyramid = open_levels(self.root, self.shape)
        except (KeyError, FileNotFoundError) as exc:
            raise StoreIntegrityError(f"{backend.description}: the image or labels array is missing ({exc})") from exc
        except Exception as exc:  # noqa: BLE001 - zarr raises many kinds for damaged metadata
            if isinstance(exc, StoreIntegrityError):
                raise
            raise StoreIntegrityError(
                f"{backend.description}/data.zarr cannot be opened ({exc.__class__.__name__}: {exc}): its metadata "
                "(zarr.json files) is damaged; restore data.zarr from a backup"
            ) from exc
        #: Label reads that skip the chunks of unlabelled space and decode the rest into one buffer
        #: (:mod:`.chunkread`); zarr reads whatever these do not take (memory projects, damage).
        self._readers = {name: chunk_reader(arr) for name, arr in (("labels", self.labels), ("imported_labels", self._imported))
                         if arr is not None}
        self._readers = {name: r for name, r in self._readers.items() if r is not None}
        if tuple(self.labels.shape) != self.shape or tuple(self.image.shape) != self.shape:
            raise StoreIntegrityError(
                f"{backend.description}: the image {tuple(self.image.shape)} or labels {tuple(self.labels.shape)} array "
                f"does not have the shape {self.shape} that {PROJECT_FILE} records; restore data.zarr from a backup"
            )
        self.log = EditLog(backend.log_backend(), source=f"{backend.description}/edits.log")
        self._records: dict[int, tuple[int, int]] = {}
        self._undo: dict[tuple[str, str], list[int]] = {}
        self._redo: dict[tuple[str, str], list[int]] = {}
        self._slice_states: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in AXES}
        self._counts = np.zeros(256, np.int64)
        self._base_counts = np.zeros(256, np.int64)
        self._applied_seq = 0
        self._labels_seq = 0  # the labels array holds every record up to this one
        self.recovered: list[int] = []
        self.torn_tail: int | None = None
        #: Records that passed the checksum but cannot be applied (set aside, reported, skipped).
        self.quarantined: list[tuple[int, int, str]] = []
        if _replay and self.read_only:
            self._load_read_only()
        elif _replay:
            with self.backend.lock():
                self._load_and_recover()

    def _read_project_doc(self) -> dict[str, Any]:
        backend = self.backend
        try:
            doc = backend.read_json(PROJECT_FILE)
            problem = None if doc is None or isinstance(doc, dict) else "not a JSON object"
        except StoreIntegrityError as exc:
            doc, problem = None, str(exc)
        if doc is None and problem is None:
            raise ProjectNotFoundError(f"{backend.description} is not an al_annotator project (no {PROJECT_FILE})")
        if problem is not None:
            try:
                backup = backend.read_json(PROJECT_FILE + ".bak")
            except StoreIntegrityError:
                backup = None
            if not isinstance(backup, dict) or "config" not in backup:
                raise StoreIntegrityError(
                    f"{backend.description}/{PROJECT_FILE} is damaged ({problem}) and there is no intact {PROJECT_FILE}.bak. "
                    "It holds the class list and volume facts: restore it from a backup of the project"
                )
            if self.read_only:
                self.repairs.append(f"{PROJECT_FILE} is damaged ({problem}); read {PROJECT_FILE}.bak instead")
            else:
                with backend.lock():
                    backend.write_json(PROJECT_FILE, backup, fsync=True)
                self.repairs.append(f"{PROJECT_FILE} was damaged ({problem}); restored from {PROJECT_FILE}.bak")
            doc = backup
        if doc.get("schema_version", 0) > SCHEMA_VERSION:
            raise StoreIntegrityError(
                f"{backend.description} was written by a newer al_annotator (schema {doc['schema_version']}, "
                f"this one reads up to {SCHEMA_VERSION}); upgrade al_annotator"
            )
        return doc

    # ------------------------------------------------------------------ facts
    @property
    def applied_seq(self) -> int:
        """The edit-log position the labels this object has read reflect (grows with every edit,
        this process's or another's once caught up): a cache key for label planes."""
        return self._applied_seq

    @property
    def path(self) -> Path | None:
        return self.backend.root

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.image.dtype)

    @property
    def display_window(self) -> tuple[float, float]:
        lo, hi = self._doc["volume"]["display_window"]
        return float(lo), float(hi)

    @property
    def volume_info(self) -> dict[str, Any]:
        return dict(self._doc["volume"])

    @property
    def has_imported_labels(self) -> bool:
        return self._imported is not None

    # ------------------------------------------------------------------ reading
    def read_slice(self, ref: SliceRef, what: str = "image", *, level: int = 0) -> np.ndarray:
        """The 2D array of ``what`` ("image" or "labels") on ``ref``, at ``level`` (each side
        ``ceil(n / 2^level)``): the image from the finest pyramid level at or above it (means of
        ``2^k`` cubes, then strided), labels and a store without a pyramid by striding the full plane."""
        ref = SliceRef(ref.axis, ref.index)
        ref.check(self.shape)
        arrays = {"image": self.image, "labels": self.labels}
        if what not in arrays:
            raise InputError(f"what must be one of {sorted(arrays)}, got {what!r}")
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise InputError(f"level must be a non-negative integer, got {level!r}")
        have = [k for k in self.pyramid if k <= level] if what == "image" else []
        if not have:
            plane = self._read_array(what, ref.selection(), where=str(ref))
            step = 2 ** int(level)
            return np.ascontiguousarray(plane[::step, ::step]) if level else plane
        k = max(have)
        coarse = SliceRef(ref.axis, ref.index >> k)
        try:
            plane = np.asarray(self.pyramid[k][coarse.selection()])
        except Exception as exc:  # noqa: BLE001 - a damaged level: the full image still answers
            self.pyramid = {}
            self.repairs.append(f"image pyramid level {k} cannot be read ({exc.__class__.__name__}: {exc}); "
                                "reading the full image instead: `al-annotator check --repair` rebuilds it")
            return self.read_slice(ref, what, level=level)
        step = 2 ** (int(level) - k)
        return np.ascontiguousarray(plane[::step, ::step]) if step > 1 else plane

    def build_pyramid(self, progress: Any = None) -> list[int]:
        """(Re)write the image pyramid (:mod:`.pyramid`): for projects created before it existed,
        or after a level was damaged; ``check --repair`` calls it when levels are missing."""
        self._check_writable()
        levels = build_pyramid(self.root, self.image, progress=progress)
        self.pyramid = open_levels(self.root, self.shape)
        return levels

    def _read_array(self, what: str, sel: tuple, *, where: str) -> np.ndarray:
        """Read from the image or labels array; a damaged chunk raises :class:`StoreIntegrityError`
        that names the array and the remedy instead of a codec's traceback."""
        arr = {"image": self.image, "labels": self.labels, "imported_labels": self._imported}[what]
        reader = self._readers.get(what)
        if reader is not None:
            out = reader.read(sel)
            if out is not None:
                return out
        try:
            return np.asarray(arr[sel])
        except Exception as exc:  # noqa: BLE001 - blosc, zarr and numpy raise many kinds
            remedy = (
                f"run `al-annotator check {self.backend.description} --repair` (it rebuilds the labels from the edit log)"
                if what == "labels"
                else "restore it from a backup of the project, or import the labels file again into a new project"
                if what == "imported_labels"
                else "the image chunk cannot be rebuilt: restore data.zarr/image from a backup, or re-create the project "
                "from the original volume (export the labels first)"
            )
            raise StoreIntegrityError(
                f"the {what} at {where} cannot be read: a chunk under {self.backend.description}/data.zarr/{what} is damaged "
                f"({exc.__class__.__name__}: {exc}); {remedy}"
            ) from exc

    def read_labels(self, sel: Any = (...,)) -> np.ndarray:
        """``labels[sel]`` for any zarr selection, read as :meth:`read_slice` reads labels (unlabelled
        chunks skipped, the rest decoded into one buffer); a damaged chunk raises
        :class:`StoreIntegrityError`. :attr:`labels_view` wraps it as a read-only array."""
        return self._read_array("labels", sel if isinstance(sel, tuple) else (sel,), where=f"selection {sel!r}")

    @property
    def labels_view(self) -> "LabelsView":
        """The saved labels as a lazy read-only array (``shape``, ``dtype``, ``chunks``, indexing) whose
        reads go through :meth:`read_labels`: what front ends' label layers and slab caches can index."""
        return LabelsView(self)

    def labelled_voxels(self) -> dict[str, int]:
        """Voxel count per class (kept incrementally; :meth:`check` verifies it)."""
        return {name: int(self._counts[i + 1]) for i, name in enumerate(self.config.classes)}

    def slice_states(self, axis: str | None = None) -> list[SliceState]:
        axes = AXES if axis is None else (SliceRef(axis, 0).axis,)
        out = []
        for ax in axes:
            for idx, st in sorted(self._slice_states[ax].items()):
                out.append(SliceState(SliceRef(ax, idx), st["state"], st.get("by", ""), st.get("at", 0.0)))
        return out

    def slice_state(self, ref: SliceRef) -> SliceState:
        st = self._slice_states[ref.axis].get(ref.index)
        if st is None:
            return SliceState(ref, "unlabelled")
        return SliceState(ref, st["state"], st.get("by", ""), st.get("at", 0.0))

    def annotated_slices(self, axis: str | None = None) -> list[SliceRef]:
        return [s.ref for s in self.slice_states(axis) if s.state == "annotated"]

    # ------------------------------------------------------------------ editing
    def paint(self, ref: SliceRef, indices: np.ndarray, value: int | str, *, tool: str = "brush", author: str | None = None) -> EditAtom:
        """Set voxels (flat 2D indices of ``ref``) to a class given by name or label value (0 erases)."""
        label = self.config.label_value(value) if isinstance(value, str) else value
        return self.apply_edit(EditAtom(ref, np.asarray(indices), np.asarray([label]), author=author or self.author, tool=tool))

    def apply_edit(self, atom: EditAtom) -> EditAtom:
        """Make an edit durable and visible. Returns the atom with ``seq`` and ``old_values`` set.

        Everything is validated before the log is touched; the edit is in the log on disk before
        this returns, and the labels array holds it too. When the labels cannot be written (a full
        disk) the edit is taken back out of the log and :class:`DiskFullError` says it was not saved.
        """
        if "undo_of" in atom.meta or "redo_of" in atom.meta:
            raise InputError("an edit's meta cannot name undo_of/redo_of: call store.undo() or store.redo()")
        return self._apply_edit(atom, {})

    def _check_writable(self) -> None:
        if self.read_only:
            raise InputError(
                f"{self.backend.description} is open read-only (a viewer); open it for writing "
                "(open_project / Session.open without read_only=True) to edit it"
            )

    def _apply_edit(self, atom: EditAtom, inverse: dict[str, int]) -> EditAtom:
        self._check_writable()
        ref, idx, new = self._validate_atom(atom)
        meta = self._edit_meta(atom, ref)
        meta.update(inverse)
        with self.backend.lock():
            self._catch_up()
            region = self._read_region(ref, idx)  # read once: old values now, modified block later
            old = region[1][region[2], region[3]].astype(np.uint8) if idx.size else np.zeros(0, np.uint8)
            record = self.log.append(meta, {"idx": idx, "old": old, "new": new})
            try:
                self._apply_record(record, write_labels=True, region=region)
            except Exception as exc:
                self._labels_write_failed(record, ref, idx, region, old, exc)
            self._labels_seq = record.seq
            self._save_state_quietly()
        return EditAtom(ref, idx, new, old, meta["author"], meta["time"], atom.tool, record.seq, dict(atom.meta))

    def _labels_write_failed(self, record: LogRecord, ref: SliceRef, idx: np.ndarray, region: tuple, old: np.ndarray,
                             exc: BaseException) -> None:
        """The log holds ``record`` but its labels write failed: put the labels back and take the
        record out of the log (the edit was not saved), or, if the labels cannot be put back either,
        keep the record (it is the truth) and leave the labels to be rewritten from it."""
        from ..errors import DiskFullError, StoreWriteError

        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "the disk is full" if full else f"{exc.__class__.__name__}: {exc}"
        cls = DiskFullError if full else StoreWriteError
        try:
            if idx.size:  # the block as read: the stroke's voxels back to their old values
                sel, block, rr, cc = region
                block[rr, cc] = old
                self.labels[sel] = block
            self.log.drop_last(record)
        except Exception:  # noqa: BLE001 - keep the record: the labels are rewritten from it later
            self._apply_record(record, write_labels=False)  # fold it; _labels_seq stays behind it
            self._save_state_quietly()
            raise cls(
                f"the labels of {ref} could not be written ({what}). The edit is saved in the edit log and the "
                f"labels are rewritten from it on the next edit or when the project is reopened; free space on "
                f"{self.backend.description}'s file system"
            ) from exc
        raise cls(
            f"this edit was not saved: writing the labels of {ref} failed ({what}). Everything saved before it is "
            f"intact. Free space on {self.backend.description}'s file system (or fix the error), then repeat the edit"
        ) from exc

    def _edit_meta(self, atom: EditAtom, ref: SliceRef) -> dict[str, Any]:
        author = atom.author or self.author
        if not isinstance(author, str) or not author or len(author) > 256:
            raise InputError(f"an edit's author must be a non-empty name of at most 256 characters, got {author!r}")
        if not isinstance(atom.tool, str) or len(atom.tool) > 64:
            raise InputError(f"an edit's tool must be a short name, got {atom.tool!r}")
        when = atom.time or time.time()
        if not isinstance(when, (int, float, np.integer, np.floating)) or not np.isfinite(when):
            raise InputError(f"an edit's time must be a finite POSIX time in seconds, got {when!r}")
        meta = {"type": "edit", "axis": ref.axis, "index": ref.index, "author": author, "time": float(when),
                "tool": atom.tool, "session": self.session}
        note = atom.meta.get("note")
        if note is not None:
            if not isinstance(note, str) or len(note) > 4096:
                raise InputError(f"an edit's note must be text of at most 4096 characters, got {type(note).__name__}")
            meta["note"] = note
        return meta

    def undo(self, author: str | None = None) -> EditAtom | None:
        """Undo the last edit this store made for ``author`` (default: this store's author); ``None``
        if there is nothing to undo. Only voxels that still hold what that edit wrote are reverted:
        a later stroke (anyone's) over the same voxels stays."""
        return self._inverse(self._undo, author=author or self.author, tag="undo_of")

    def redo(self, author: str | None = None) -> EditAtom | None:
        """Redo the last undo of this store for ``author`` (same rule: only voxels the undo set)."""
        return self._inverse(self._redo, author=author or self.author, tag="redo_of")

    def can_undo(self, author: str | None = None) -> bool:
        return bool(self._undo.get((author or self.author, self.session)))

    def can_redo(self, author: str | None = None) -> bool:
        return bool(self._redo.get((author or self.author, self.session)))

    def reload_config(self) -> bool:
        """Re-read ``project.json`` (another process may have edited the palette); True if the config changed."""
        doc = self.backend.read_json(PROJECT_FILE)
        if not doc:
            return False
        cfg = ProjectConfig.from_json(doc["config"])
        changed = cfg != self.config
        self._doc, self.config = doc, cfg
        return changed

    def edit_classes(self, *, names: dict[int, str] | None = None, colours: dict[int, str] | None = None) -> ProjectConfig:
        """Rename classes and/or change their colours (keys are label values 1..n); saved in ``project.json``.

        The label values stay the same, so no saved label changes meaning and a trained model stays
        valid. Names must stay unique and non-empty, colours ``'#rrggbb'``; a bad value raises
        :class:`InputError` and changes nothing. Another process's earlier palette edit is kept
        (the file is re-read under the writer lock).

        >>> import numpy as np
        >>> store = create_project(None, np.zeros((2, 4, 4), np.uint8), classes="background,bone")
        >>> store.edit_classes(names={2: "cortical bone"}, colours={2: "#00FF00"}).classes
        ('background', 'cortical bone')
        >>> store.config.colours[1]
        '#00ff00'
        """
        self._check_writable()
        names, colours = dict(names or {}), dict(colours or {})
        with self.backend.lock():
            self.reload_config()
            doc, cfg = self._doc, self.config
            for value in (*names, *colours):
                if not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= cfg.n_classes:
                    raise InputError(f"class value {value!r} is outside 1..{cfg.n_classes} ({', '.join(cfg.classes)})")
            new_names = [str(names.get(i + 1, n)).strip() for i, n in enumerate(cfg.classes)]
            new_colours = [str(colours.get(i + 1, c)).lower() for i, c in enumerate(cfg.colours)]
            new = ProjectConfig(classes=tuple(new_names), colours=tuple(new_colours), spacing=cfg.spacing,
                                spacing_unit=cfg.spacing_unit, extra=dict(cfg.extra))  # validates
            doc = dict(doc, config=new.to_json())
            self.backend.write_json(PROJECT_FILE + ".bak", doc, fsync=True)
            self.backend.write_json(PROJECT_FILE, doc, fsync=True)
            self._doc, self.config = doc, new
        return new

    def set_slice_state(self, ref: SliceRef, state: str, *, author: str | None = None) -> None:
        """Mark a slice ``"annotated"``, ``"in_progress"`` or ``"unlabelled"`` (durable, logged)."""
        self._check_writable()
        ref = SliceRef(ref.axis, ref.index)
        ref.check(self.shape)
        if state not in SLICE_STATES:
            raise InputError(f"slice state must be one of {SLICE_STATES}, got {state!r}")
        meta = {"type": "state", "axis": ref.axis, "index": ref.index, "state": state, "author": author or self.author, "time": time.time()}
        with self.backend.lock():
            self._catch_up()
            record = self.log.append(meta, {})
            self._apply_record(record, write_labels=False)
            self._labels_seq = record.seq
            self._save_state_quietly()

    def refresh(self) -> list[LogRecord]:
        """Pick up edits made by other processes since the last call; returns the new records."""
        if self.read_only:
            result = self.log.read_new()
            for rec in result.records:
                self._apply_record(rec, write_labels=False)
            return result.records
        with self.backend.lock():
            return self._catch_up()

    # ------------------------------------------------------------------ checking
    def replay(self) -> np.ndarray:
        """The labels rebuilt from the imported base and the whole log (in memory), skipping damaged
        bytes and quarantined records exactly as opening does."""
        labels = (self._read_array("imported_labels", (...,), where="the imported base") if self.has_imported_labels
                  else np.zeros(self.shape, np.uint8))
        with self.log.backend.reader() as fh:
            records = scan_records(fh, 0, source=self.log.source).records
        for rec in records:
            if rec.kind == "edit" and self._record_problem(rec) is None:
                ref = SliceRef(rec.meta["axis"], rec.meta["index"])
                view = labels[ref.selection()]
                flat = view.reshape(-1) if view.flags.c_contiguous else None
                if flat is not None:
                    flat[rec.arrays["idx"]] = rec.arrays["new"]
                else:
                    rows, cols = np.unravel_index(rec.arrays["idx"], view.shape)
                    view[rows, cols] = rec.arrays["new"]
        return labels

    def _read_labels_tolerant(self) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """The whole labels array, chunk by chunk; damaged chunks read as 255 and are listed."""
        out = np.empty(self.shape, np.uint8)
        damaged = []
        cz, cy, cx = self.labels.chunks
        for i in range(0, self.shape[0], cz):
            for j in range(0, self.shape[1], cy):
                for k in range(0, self.shape[2], cx):
                    sel = (slice(i, i + cz), slice(j, j + cy), slice(k, k + cx))
                    try:
                        out[sel] = self.labels[sel]
                    except Exception:  # noqa: BLE001 - a damaged chunk, whatever the codec raises
                        out[sel] = 255
                        damaged.append((i // cz, j // cy, k // cx))
        return out, damaged

    def problems_found_on_open(self) -> list[str]:
        """What opening repaired, set aside or skipped (empty for a healthy project)."""
        notes = list(self.repairs)
        if self.torn_tail is not None:
            notes.append(f"a torn record at byte {self.torn_tail} (an edit in flight when a writer died, never "
                         "acknowledged) was set aside as edits.log.torn")
        if self.log.damaged:
            notes.append(damaged_message(self.log.source, self.log.damaged))
        for seq, offset, why in self.quarantined:
            notes.append(f"edit-log record {seq} (byte {offset}) cannot be applied ({why}); it is skipped and kept in the log")
        return notes

    def check(self, *, repair: bool = False, full: bool = True) -> list[str]:
        """Verify the project; return a list of problems (empty when healthy).

        Checks that every image and labels chunk exists, that the labels equal the replayed log
        and that the per-class counts match. With ``repair=True`` the labels are rebuilt from the
        log when they differ (the log is the record of truth).
        """
        if repair:
            self._check_writable()
        problems = self.missing_chunks()
        wanted = pyramid_levels(self.shape)
        if repair and sorted(self.pyramid) != wanted:
            self.build_pyramid()
            problems.append(f"the image pyramid (levels {wanted}, for zoomed-out views) was missing or incomplete (built)")
        if full and self.read_only:
            problems.append("a read-only store checks chunks only; open the project for writing for a full check")
        elif full:
            with self.backend.lock():
                self._catch_up()
                expected = self.replay()
                actual, bad_chunks = self._read_labels_tolerant()
                if bad_chunks:
                    problems.append(
                        f"labels: {len(bad_chunks)} chunks cannot be read (damaged), e.g. {bad_chunks[:5]}"
                        + (" (rebuilt from the edit log)" if repair else "; `check --repair` rebuilds them from the edit log")
                    )
                diff_mask = expected != actual
                diff = int(np.count_nonzero(diff_mask))
                if diff:
                    problems.append(f"{diff} label voxels differ from the replayed edit log")
                    if repair:
                        # keep what is replaced: the labels may hold a stroke whose record was damaged
                        where = np.flatnonzero(diff_mask)
                        buf = io.BytesIO()
                        np.savez_compressed(buf, shape=np.asarray(self.shape), index=where, value=actual.reshape(-1)[where])
                        kept = self.backend.keep_aside("labels.before-repair.npz", buf.getvalue())
                        self.labels[...] = expected
                        actual = expected
                        problems[-1] += f" (repaired from the log; the replaced values are kept in {kept})"
                counts = np.bincount(actual.reshape(-1), minlength=256)
                if not np.array_equal(counts[1:], self._counts[1:]):
                    problems.append("per-class voxel counts in state.json were stale" + (" (recomputed)" if repair else ""))
                    if repair:
                        self._counts = counts.astype(np.int64)
                        self._counts[0] = 0
                        self._save_state()
        return problems

    def missing_chunks(self) -> list[str]:
        """Chunks of the image or labels array that should exist on disk but do not."""
        if self.backend.root is None:
            return []
        problems = []
        for name in ("image", "labels"):
            arr = self.root[name]
            grid = [int(np.ceil(s / c)) for s, c in zip(arr.shape, arr.chunks)]
            base = self.backend.root / "data.zarr" / name / "c"
            missing = [
                (i, j, k)
                for i in range(grid[0])
                for j in range(grid[1])
                for k in range(grid[2])
                if not (base / str(i) / str(j) / str(k)).exists()
            ]
            if missing:
                problems.append(
                    f"{name}: {len(missing)} of {int(np.prod(grid))} chunks are missing, e.g. {missing[:5]}"
                    + (" (labels there read as unlabelled: restore them or run `al-annotator check --repair`)" if name == "labels" else "")
                )
        return problems

    def info(self) -> dict[str, Any]:
        """What ``al-annotator info`` prints."""
        from .models import list_model_versions

        per_axis = {
            ax: {
                "annotated": sum(1 for s in self.slice_states(ax) if s.state == "annotated"),
                "in_progress": sum(1 for s in self.slice_states(ax) if s.state == "in_progress"),
                "slices": self.shape[i],
            }
            for i, ax in enumerate(AXES)
        }
        counts = self.labelled_voxels()
        return {
            "path": str(self.backend.description),
            "schema_version": self._doc["schema_version"],
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "chunks": list(self.image.chunks),
            "spacing": list(self.config.spacing),
            "spacing_unit": self.config.spacing_unit,
            "pyramid_levels": sorted(self.pyramid),
            "classes": [{"value": i + 1, "name": n, "colour": c} for i, (n, c) in enumerate(zip(self.config.classes, self.config.colours))],
            "display_window": list(self.display_window),
            "source": self._doc["volume"].get("source"),
            "labelled_voxels": int(sum(counts.values())),
            "labelled_voxels_per_class": counts,
            "slices": per_axis,
            "edits": self.log.last_seq,
            "model_versions": list_model_versions(self),
            "problems_found_on_open": self.problems_found_on_open(),
        }

    def close(self) -> None:
        self.log.backend.close()

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProjectStore({self.backend.description!r}, shape={self.shape}, classes={list(self.config.classes)})"

    # ------------------------------------------------------------------ internals
    def _validate_atom(self, atom: EditAtom) -> tuple[SliceRef, np.ndarray, np.ndarray]:
        if not isinstance(atom.slice_ref, SliceRef):
            raise InputError(f"an edit needs a SliceRef, got {type(atom.slice_ref).__name__}")
        ref = SliceRef(atom.slice_ref.axis, atom.slice_ref.index)
        ref.check(self.shape)
        h, w = ref.shape_in(self.shape)
        idx = np.asarray(atom.indices)
        if idx.ndim != 1:
            raise InputError(f"edit indices must be a flat 1D array of 2D slice positions, got shape {idx.shape}")
        if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= h * w):
            raise InputError(f"edit indices must be integers in 0..{h * w - 1} for a {h}x{w} slice")
        idx = idx.astype(np.uint32 if h * w < 2**32 else np.uint64)
        new = np.asarray(atom.new_values)
        if new.ndim == 0:
            new = new.reshape(1)
        if new.ndim != 1 or new.size not in (1, idx.size):
            raise InputError(
                f"an edit needs one new value or a flat array of one per index ({idx.size}), got shape {new.shape}"
            )
        classes = f"({', '.join(f'{i + 1}={n}' for i, n in enumerate(self.config.classes))})"
        if new.size and new.dtype.kind not in "iu":
            raise LabelValueError(
                f"label values must be integers 0 (unlabelled) or 1..{self.config.n_classes} {classes}; got dtype {new.dtype}"
            )
        if new.size and (new.min() < 0 or new.max() > self.config.n_classes):
            raise LabelValueError(
                f"label values must be 0 (unlabelled) or 1..{self.config.n_classes} {classes}; got {np.unique(new)[:10].tolist()}"
            )
        return ref, idx, new.astype(np.uint8)

    def _record_problem(self, rec: LogRecord) -> str | None:
        """Why a checksummed record cannot be applied (``None`` when it can). Every process reaches
        the same verdict from the same bytes, so a bad record is skipped everywhere alike."""
        meta, arrays = rec.meta, rec.arrays
        try:
            if rec.kind == "edit":
                ref = SliceRef(meta["axis"], meta["index"])
                ref.check(self.shape)
                h, w = ref.shape_in(self.shape)
                idx, old, new = arrays["idx"], arrays["old"], arrays["new"]
                if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iu" or int(idx.max()) >= h * w)):
                    return f"indices outside the {h}x{w} slice {ref}"
                if old.shape != idx.shape or new.ndim != 1 or new.size not in (1, idx.size):
                    return f"value arrays of shapes {old.shape} and {new.shape} for {idx.size} indices"
                if new.size and (new.dtype.kind not in "iu" or int(new.max()) > self.config.n_classes):
                    return f"label values {np.unique(new)[:5].tolist()} outside 0..{self.config.n_classes}"
                for key in ("undo_of", "redo_of"):
                    if key in meta and not isinstance(meta[key], int):
                        return f"{key}={meta[key]!r} is not a record number"
            elif rec.kind == "state":
                SliceRef(meta["axis"], meta["index"]).check(self.shape)
                if meta["state"] not in SLICE_STATES:
                    return f"unknown slice state {meta['state']!r}"
            elif rec.kind != "import":
                return None  # an unknown kind is handled by _apply_record (a newer al_annotator)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return f"{exc.__class__.__name__}: {exc}"
        return None

    def _region(self, ref: SliceRef, idx: np.ndarray) -> tuple[tuple, np.ndarray, np.ndarray]:
        """A 2D bounding box of the indices (as a 3D selection) and row/col offsets inside it."""
        _, w = ref.shape_in(self.shape)
        rows, cols = np.divmod(idx.astype(np.int64), w)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        sel: list[Any] = [slice(r0, r1), slice(c0, c1)]
        sel.insert(ref.axis_number, ref.index)
        return tuple(sel), rows - r0, cols - c0

    def _read_region(self, ref: SliceRef, idx: np.ndarray) -> tuple:
        """``(selection, block, rows, cols)``: the labels in the bounding box of ``idx`` on ``ref``."""
        if idx.size == 0:
            return ((), np.zeros((0, 0), np.uint8), idx, idx)
        sel, rr, cc = self._region(ref, idx)
        return sel, np.array(self._read_array("labels", sel, where=str(ref))), rr, cc

    def _write_values(self, ref: SliceRef, idx: np.ndarray, new: np.ndarray, region: tuple | None = None) -> None:
        if idx.size == 0:
            return
        sel, block, rr, cc = region if region is not None else self._read_region(ref, idx)
        block[rr, cc] = new
        self.labels[sel] = block

    def _apply_record(self, rec: LogRecord, *, write_labels: bool, region: tuple | None = None) -> None:
        """Fold one record into the in-memory state (and, for new or replayed records, the labels).
        A record that cannot be applied is quarantined: skipped, reported, never rewritten."""
        meta = rec.meta
        if rec.kind not in ("edit", "state", "import"):
            raise StoreIntegrityError(f"unknown record type {rec.kind!r} at seq {rec.seq} in the edit log (newer al_annotator?)")
        problem = self._record_problem(rec)
        if problem is not None:
            self.quarantined.append((rec.seq, rec.offset, problem))
            self._applied_seq = rec.seq
            return
        if rec.kind == "edit":
            ref = SliceRef(meta["axis"], meta["index"])
            idx, old, new = rec.arrays["idx"], rec.arrays["old"], rec.arrays["new"]
            if write_labels:
                self._write_values(ref, idx, new, region)
            np.subtract.at(self._counts, old, 1)
            np.add.at(self._counts, np.broadcast_to(new, idx.shape), 1)
            self._counts[0] = 0
            self._records[rec.seq] = (rec.offset, rec.size)
            author = meta.get("author", "")
            key = (author, meta.get("session", ""))
            undo, redo = self._undo.setdefault(key, []), self._redo.setdefault(key, [])
            # undo stack: records to invert next (edits and redos); redo stack: undo records
            if "undo_of" in meta:
                if undo and undo[-1] == meta["undo_of"]:
                    undo.pop()
                    redo.append(rec.seq)
            elif "redo_of" in meta:
                if redo and redo[-1] == meta["redo_of"]:
                    redo.pop()
                    undo.append(rec.seq)
            else:
                undo.append(rec.seq)
                redo.clear()
            states = self._slice_states[ref.axis]
            if ref.index not in states or states[ref.index]["state"] == "unlabelled":
                states[ref.index] = {"state": "in_progress", "by": author, "at": meta.get("time", 0.0)}
        elif rec.kind == "state":
            states = self._slice_states[meta["axis"]]
            if meta["state"] == "unlabelled":
                states.pop(int(meta["index"]), None)
            else:
                states[int(meta["index"])] = {"state": meta["state"], "by": meta.get("author", ""), "at": meta.get("time", 0.0)}
        self._applied_seq = rec.seq

    def _inverse(self, stacks: dict[tuple[str, str], list[int]], *, author: str, tag: str) -> EditAtom | None:
        """Invert the record on top of this session's ``author`` stack (undo or redo): write its old
        values back where the labels still hold its new values."""
        self._check_writable()
        with self.backend.lock():
            self._catch_up()
            stack = stacks.get((author, self.session), [])
            if not stack:
                return None
            target = self._read_record(stack[-1])
            ref = SliceRef(target.meta["axis"], target.meta["index"])
            idx = target.arrays["idx"]
            wrote = np.broadcast_to(target.arrays["new"], idx.shape)
            restore = target.arrays["old"]
            if idx.size:
                sel, block, rr, cc = self._read_region(ref, idx)
                still = block[rr, cc] == wrote
                idx, restore = idx[still], restore[still]
            atom = EditAtom(ref, np.ascontiguousarray(idx), np.ascontiguousarray(restore), author=author, tool=tag.split("_")[0])
            return self._apply_edit(atom, {tag: target.seq})

    def _read_record(self, seq: int) -> LogRecord:
        offset, size = self._records[seq]
        with self.log.backend.reader() as fh:
            fh.seek(offset)
            blob = fh.read(size)
        records = scan_records(io.BytesIO(blob), 0, source=self.log.source).records
        if not records or records[0].seq != seq:
            raise StoreIntegrityError(f"record {seq} is not where the edit log index says (byte {offset}); run `al-annotator check`")
        return LogRecord(seq, records[0].meta, records[0].arrays, offset, size)

    def _take_scan(self, result: ScanResult) -> None:
        """Act on what a scan found, under the writer lock: cut a torn tail (a dead writer's record
        in flight) keeping its bytes aside, and keep a copy of damaged ranges beside the log."""
        if result.torn_at is not None:
            tail = self.log.cut_torn_tail(result.torn_at)
            self.backend.keep_aside("edits.log.torn", tail)
            self.torn_tail = result.torn_at
        for r in result.damaged:
            name = f"edits.log.damaged-{r.offset}"
            if self.backend.root is None or not (self.backend.root / name).exists():
                with self.log.backend.reader() as fh:
                    fh.seek(r.offset)
                    self.backend.keep_aside(name, fh.read(r.size))

    def _disk_labels_seq(self) -> int:
        """The log position the labels on disk hold, as the last writer recorded in state.json."""
        try:
            state = self.backend.read_json(STATE_FILE)
            return int(state["applied_seq"]) if isinstance(state, dict) else 0
        except (StoreIntegrityError, KeyError, TypeError, ValueError):
            return 0

    def _catch_up(self) -> list[LogRecord]:
        """Fold in records appended by other processes, under the writer lock. A writer can die
        between its log write and its labels write, so the labels are rewritten for every record past
        the position the last writer recorded in state.json (idempotent: records set values, in order)."""
        before = self._applied_seq
        result = self.log.read_new()
        self._take_scan(result)
        for rec in result.records:
            self._apply_record(rec, write_labels=False)
        pending = self._labels_seq < before
        if result.records or pending:
            floor = self._disk_labels_seq() if result.records else self._labels_seq
            if pending:
                floor = min(floor, self._labels_seq)
            if floor < self._applied_seq:
                self._relabel_after(floor)
                self._save_state_quietly()
            self._labels_seq = self._applied_seq
        return result.records

    def _relabel_after(self, floor: int) -> None:
        """Rewrite the labels of every edit record after ``floor``, in log order."""
        from ..errors import DiskFullError, StoreWriteError

        seqs = []
        for seq in reversed(self._records):  # insertion order is log order: stop at the floor
            if seq <= floor:
                break
            seqs.append(seq)
        for seq in reversed(seqs):
            rec = self._read_record(seq)
            ref = SliceRef(rec.meta["axis"], rec.meta["index"])
            try:
                self._write_values(ref, rec.arrays["idx"], rec.arrays["new"])
            except OSError as exc:
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                raise (DiskFullError if full else StoreWriteError)(
                    f"this edit was not saved: the labels of earlier edits (from record {seq} on, kept in the edit log) "
                    f"must be written first and that failed ({'the disk is full' if full else exc}). Free space on "
                    f"{self.backend.description}'s file system, then repeat the edit"
                ) from exc
            self.recovered.append(seq)

    def _load_and_recover(self) -> None:
        try:
            state = self.backend.read_json(STATE_FILE)
            if state is not None and not isinstance(state, dict):
                raise StoreIntegrityError(f"{STATE_FILE} is not a JSON object")
        except StoreIntegrityError as exc:
            state = None
            self.repairs.append(f"{STATE_FILE} was damaged ({exc}); rebuilt from the edit log")
        state = state or {}
        try:
            applied = int(state.get("applied_seq", 0))
            base = np.asarray(state["base_counts"], np.int64) if "base_counts" in state else None
            if base is not None and base.shape != (256,):
                raise ValueError(f"base_counts of shape {base.shape}")
        except (TypeError, ValueError) as exc:
            self.repairs.append(f"{STATE_FILE} held bad values ({exc}); rebuilt from the edit log")
            applied, base, state = 0, None, {}
        if base is None:  # recount the imported labels (the base the log replays on)
            base = np.zeros(256, np.int64)
            if self.has_imported_labels:
                imported = self._imported
                for z0 in range(0, self.shape[0], imported.chunks[0]):
                    sel = (slice(z0, z0 + imported.chunks[0]),)
                    base += np.bincount(self._read_array("imported_labels", sel, where=f"z={z0}").reshape(-1), minlength=256)
            base[0] = 0
        self._base_counts = base
        self._counts = self._base_counts.copy()
        result = self.log.read_all()
        self._take_scan(result)
        self._applied_seq = 0
        for rec in result.records:
            # Records the labels may not hold yet are re-applied (idempotent: they set values).
            try:
                self._apply_record(rec, write_labels=rec.seq > applied)
            except OSError as exc:
                from ..errors import DiskFullError, StoreWriteError

                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                raise (DiskFullError if full else StoreWriteError)(
                    f"{self.backend.description} cannot be opened yet: edits from record {rec.seq} on are saved in the edit "
                    f"log but not yet in the labels, and writing them failed ({'the disk is full' if full else exc}). "
                    "Nothing is lost: free space on that file system and open the project again"
                ) from exc
            if rec.seq > applied and rec.seq in self._records:
                self.recovered.append(rec.seq)
        self._labels_seq = self._applied_seq
        if self.recovered or applied != self._applied_seq or not state:
            self._save_state_quietly()

    def _load_read_only(self) -> None:
        """Fold the log into memory without writing anything (no torn-tail cut, no relabel)."""
        try:
            state = self.backend.read_json(STATE_FILE)
        except StoreIntegrityError:
            state = None
        state = state if isinstance(state, dict) else {}
        try:
            self._base_counts = np.asarray(state.get("base_counts", [0] * 256), np.int64).reshape(256)
        except (TypeError, ValueError):
            self._base_counts = np.zeros(256, np.int64)
        self._counts = self._base_counts.copy()
        result = self.log.read_all()
        for rec in result.records:
            self._apply_record(rec, write_labels=False)
        try:
            behind = int(state.get("applied_seq", 0)) < self._applied_seq
        except (TypeError, ValueError):
            behind = True
        if behind:
            self.repairs.append("the labels on disk are behind the edit log (a writer died); opening the project "
                                "for writing rewrites them")
        self._labels_seq = self._applied_seq

    def _save_state(self) -> None:
        self.backend.write_json(
            STATE_FILE,
            {
                "applied_seq": self._labels_seq,
                "log_end": self.log.end,
                "counts": self._counts.tolist(),
                "base_counts": self._base_counts.tolist(),
                "slices": {ax: {str(k): v for k, v in d.items()} for ax, d in self._slice_states.items()},
            },
        )

    def _save_state_quietly(self) -> None:
        """state.json is a cache of the log (slice states, counts, how far the labels are): when it
        cannot be written (a full disk) the old one stays, which only makes the next open replay more."""
        try:
            self._save_state()
        except OSError:
            pass


# ---------------------------------------------------------------------- creation
def create_project(
    path: str | os.PathLike | None,
    volume: Any,
    *,
    classes: Sequence[str] | str | None = None,
    colours: Sequence[str] | None = None,
    spacing: Sequence[float] | str | None = None,
    unit: str | None = None,
    labels: Any = None,
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS,
    author: str | None = None,
    fsync: bool = True,
    read_kw: dict[str, Any] | None = None,
    labels_read_kw: dict[str, Any] | None = None,
    progress: Any = None,
    group_writable: bool = False,
) -> ProjectStore:
    """Create a project from a volume (a path, a :class:`~al_annotator.io.VolumeData` or an array).

    ``path=None`` makes an in-memory project. Nothing is left behind when creation fails: the
    project is built in a hidden sibling directory and renamed into place at the end.

    Parameters
    ----------
    classes
        Class names (default: background, bone, implant, degradation). Label value i+1 is class i.
    spacing
        Voxel spacing (z, y, x); defaults to what the file says, else (1, 1, 1).
    unit
        The spacing's length unit (``"micrometer"``, ``"um"``, ``"mm"``..., see
        :func:`al_annotator.io.units.parse_unit`); defaults to the file's unit, else ``"pixel"`` (none).
        Kept in ``project.json`` and written by every exporter.
    labels
        Existing labels to import (same shape; 0 = unlabelled, 1..C = classes).
    progress
        Optional callable ``progress(done, total, what)`` (:class:`al_annotator.progress.ProgressBars` draws it).
    group_writable
        A project shared by the group of its parent directory: setgid, group-writable directories and
        group rw files, kept so by every later write (:mod:`al_annotator.store.perms`). Otherwise the
        project gets the user's umask.

    Examples
    --------
    >>> import numpy as np
    >>> store = create_project(None, np.random.rand(4, 8, 8).astype("float32"), classes="a,b")
    >>> store.shape
    (4, 8, 8)
    """
    from ..config import DEFAULT_CLASSES, parse_spacing

    cfg_classes = classes if classes is not None else DEFAULT_CLASSES
    if isinstance(cfg_classes, str):
        from ..config import parse_classes

        cfg_classes = parse_classes(cfg_classes)
    if path is not None:
        target = Path(path).expanduser().absolute()
        if target.exists():
            raise ProjectExistsError(
                f"{target} already exists; choose a new project directory, or open it with open_project({str(target)!r})"
            )
        if not target.parent.is_dir():
            raise InputError(f"the parent directory {target.parent} does not exist; create it first")
    vol, close = _as_volume(volume, **(read_kw or {}))
    lab_vol, lab_close = (None, lambda: None) if labels is None else _as_volume(labels, **(labels_read_kw or {}))
    try:
        _check_volume_array(vol.array)
        user_spacing = parse_spacing(spacing)
        config = ProjectConfig(
            classes=tuple(cfg_classes),
            colours=tuple(colours or ()),
            spacing=user_spacing or vol.spacing or (1.0, 1.0, 1.0),
            spacing_unit=_spacing_unit(unit, vol),
        )
        if lab_vol is not None:
            _check_volume_array(lab_vol.array, "labels volume")
            if tuple(lab_vol.array.shape) != tuple(vol.array.shape):
                raise InputError(f"the labels have shape {tuple(lab_vol.array.shape)} but the volume has {tuple(vol.array.shape)}; they must match")
        if path is not None:  # a tiny file can declare a huge volume: refuse before writing anything
            from ..io._space import estimate_project_bytes, require_free_space

            shape = tuple(int(n) for n in vol.array.shape)
            extra = int(np.prod(shape)) if lab_vol is not None else 0  # imported_labels: one more uint8 copy
            extra += pyramid_bytes(shape, vol.array.dtype)
            require_free_space(target.parent, estimate_project_bytes(shape, vol.array.dtype) + extra,
                               f"the project for {vol.source} ({' x '.join(map(str, shape))} {np.dtype(vol.array.dtype)})")
        if path is None:
            backend = MemoryBackend()
            _build(backend, vol, lab_vol, config, chunks, progress)
            return ProjectStore(backend, author=author)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.creating-", dir=target.parent))
        try:
            set_project_dir_mode(tmp, group_writable)  # mkdtemp's 0700 ignores the umask
            _build(LocalBackend(tmp, fsync=fsync), vol, lab_vol, config, chunks, progress)
            if group_writable:
                share_tree(tmp)
            if target.exists():
                raise ProjectExistsError(f"{target} appeared while the project was being created; nothing was overwritten")
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return ProjectStore(LocalBackend(target, fsync=fsync), author=author)
    finally:
        close()
        lab_close()


def _spacing_unit(unit: str | None, vol: Any) -> str:
    """What ``project.json`` records as the spacing unit: the one given, else the file's (as the
    reader named it), else ``"pixel"`` (no unit)."""
    from ..io.units import NO_UNIT, parse_unit, unit_or_none

    if unit is not None:
        return parse_unit(unit, what="unit=") or NO_UNIT
    return unit_or_none(vol.spacing_unit) or NO_UNIT


def _build(backend, vol, lab_vol, config: ProjectConfig, chunks, progress) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    arr = vol.array
    shape = tuple(int(s) for s in arr.shape)
    dtype = np.dtype(arr.dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    chunks = tuple(min(c, s) for c, s in zip(chunks, shape))
    root = zarr.open_group(store=backend.zarr_store(), mode="w")
    # Image: uncompressed. Measured (benchmarks/bench_store.py): noisy CT compresses ~1.3x at best and
    # decompression doubles slice latency. Every chunk is written so a missing one can be detected.
    image = root.create_array("image", shape=shape, dtype=dtype, chunks=chunks, compressors=None, fill_value=0, config={"write_empty_chunks": True})
    lab_codec = [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")]
    labels = root.create_array("labels", shape=shape, dtype=np.uint8, chunks=chunks, compressors=lab_codec, fill_value=0, config={"write_empty_chunks": True})
    sample: list[np.ndarray] = []
    step = max(1, shape[0] // 32)
    n_slab = chunks[0]
    counts = np.zeros(256, np.int64)
    imported = None
    if lab_vol is not None:
        imported = root.create_array("imported_labels", shape=shape, dtype=np.uint8, chunks=chunks, compressors=lab_codec, fill_value=0, config={"write_empty_chunks": True})
    for z0 in range(0, shape[0], n_slab):
        z1 = min(shape[0], z0 + n_slab)
        try:
            slab = np.asarray(arr[z0:z1])
        except Exception as exc:  # a truncated file found mid-way
            raise InputError(f"cannot read slices {z0}..{z1 - 1} of {vol.source}: {exc}") from exc
        if slab.dtype.kind == "f":
            bad = ~np.isfinite(slab)
            if bad.any():
                where = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0]) + z0
                raise InputError(
                    f"the volume {vol.source} has {int(bad.sum())} NaN/inf voxels in slices {z0}..{z1 - 1} (first at z={where}); "
                    "replace them (e.g. numpy.nan_to_num) before importing"
                )
        image[z0:z1] = slab.astype(dtype, copy=False)
        sample.append(slab[:: max(1, step), ::4, ::4].reshape(-1) if slab.size else slab.reshape(-1))
        if imported is not None:
            lab = np.asarray(lab_vol.array[z0:z1])
            if lab.dtype.kind not in "biu" and not (lab.dtype.kind == "f" and np.all(np.mod(lab, 1) == 0)):
                raise InputError(f"labels must be integers (0 = unlabelled, 1..{config.n_classes} = classes), got dtype {lab.dtype}")
            if lab.size and (lab.min() < 0 or lab.max() > config.n_classes):
                bad_vals = np.unique(lab[(lab < 0) | (lab > config.n_classes)])[:10].tolist()
                raise LabelValueError(
                    f"the labels hold values {bad_vals} outside 0..{config.n_classes}; the project has {config.n_classes} classes "
                    f"({', '.join(f'{i + 1}={n}' for i, n in enumerate(config.classes))}). Pass matching --classes, or remap the labels"
                )
            lab = lab.astype(np.uint8)
            imported[z0:z1] = lab
            labels[z0:z1] = lab
            counts += np.bincount(lab.reshape(-1), minlength=256)
        else:
            labels[z0:z1] = 0
        if progress is not None:
            progress(z1, shape[0], "import")
    build_pyramid(root, image, progress=progress)
    values = np.concatenate(sample) if sample else np.zeros(1)
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    counts[0] = 0
    project_doc = {
            "app": "al_annotator",
            "schema_version": SCHEMA_VERSION,
            "created": time.time(),
            "config": config.to_json(),
            "volume": {
                "shape": list(shape),
                "dtype": str(dtype),
                "chunks": list(chunks),
                "source": str(vol.source),
                "format": vol.format,
                "display_window": [lo, hi],
                "display_percentiles": [0.5, 99.5],
                "min": float(values.min()),
                "max": float(values.max()),
            },
        }
    backend.write_json(PROJECT_FILE + ".bak", project_doc, fsync=True)  # what a damaged project.json is restored from
    backend.write_json(PROJECT_FILE, project_doc, fsync=True)
    log = EditLog(backend.log_backend())
    applied = None
    if imported is not None:
        applied = log.append({"type": "import", "time": time.time(), "voxels": int(counts.sum()), "source": str(lab_vol.source)}, {})
    log.backend.close()
    backend.write_json(
        STATE_FILE,
        {"applied_seq": applied.seq if applied else 0, "counts": counts.tolist(), "base_counts": counts.tolist(), "slices": {a: {} for a in AXES}},
    )


def open_project(path: str | os.PathLike, *, author: str | None = None, fsync: bool = True, session: str | None = None,
                 read_only: bool = False) -> ProjectStore:
    """Open an existing project directory (recovering edits that a crash left out of the labels).

    ``read_only=True`` writes nothing (for viewers: the napari reader); edits then raise."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ProjectNotFoundError(f"{root} does not exist; create a project with `al-annotator init {root} --volume VOLUME`")
    if not (root / PROJECT_FILE).exists():
        raise ProjectNotFoundError(f"{root} is not an al_annotator project (no {PROJECT_FILE}); create one with `al-annotator init`")
    return ProjectStore(LocalBackend(root, fsync=fsync), author=author, session=session, read_only=read_only)
