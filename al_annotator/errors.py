"""Errors that name the problem and the remedy.

Every error raised at a boundary (CLI, importer, store) derives from :class:`AlAnnotatorError`, so
front ends can show the message as is.
"""

from __future__ import annotations

__all__ = [
    "AlAnnotatorError",
    "InputError",
    "ProjectExistsError",
    "ProjectNotFoundError",
    "EditLogCorruptError",
    "StoreIntegrityError",
    "LabelValueError",
    "DiskFullError",
    "StoreWriteError",
]


class AlAnnotatorError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(AlAnnotatorError, ValueError):
    """Input data (a volume file, an array, an option) is unusable; the message says why and what to do."""


class ProjectExistsError(AlAnnotatorError, FileExistsError):
    """A project directory (or any file) already exists where a new project was to be created."""


class ProjectNotFoundError(AlAnnotatorError, FileNotFoundError):
    """The path is not an al_annotator project."""


class EditLogCorruptError(AlAnnotatorError):
    """The append-only edit log has a damaged record before its end (not just a torn last write).

    ``offset`` is the byte where the damage starts; ``last_good_seq`` the last intact record.
    """

    def __init__(self, offset: int, last_good_seq: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.last_good_seq = last_good_seq


class StoreIntegrityError(AlAnnotatorError):
    """A chunk, array or file that the project needs is missing or unreadable."""


class LabelValueError(AlAnnotatorError, ValueError):
    """A label value is outside the project's class list."""


class DiskFullError(AlAnnotatorError, OSError):
    """A write failed because the disk (or quota) is full; what was already saved is intact."""


class StoreWriteError(AlAnnotatorError, OSError):
    """A project file could not be written (disk error, permissions); what was already saved is intact."""
