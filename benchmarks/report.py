"""Write a benchmark's figures into docs/BENCHMARKS.md, in a section of its own, with the command."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

__all__ = ["cpu_name", "machine_line", "replace_section", "write_section"]

_HEADER = "# Benchmarks\n\nEvery figure here was written by the script named with it.\n"


def cpu_name(fallback: str | None = None) -> str:
    """The CPU model from ``/proc/cpuinfo``; else ``fallback`` (default: ``platform.processor()`` or the machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return fallback if fallback is not None else (platform.processor() or platform.machine())


def machine_line() -> str:
    cpu = cpu_name(platform.processor() or "unknown CPU")
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){gpu}, Python {platform.python_version()}"


def replace_section(md_path: str | os.PathLike, key: str, body: str, *, header: str = "# Benchmarks\n\n") -> None:
    """Replace the ``<!-- key:start -->``...``<!-- key:end -->`` section of ``md_path`` with ``body``.

    The section is appended when missing; a missing file starts with ``header``. Written atomically.
    """
    path = Path(md_path)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else header
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_section(md_path: str | os.PathLike, key: str, title: str, body: str, command: str) -> None:
    """Replace (or append) the section ``key`` with a ``## title``, the command, the date and machine, and ``body``."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = f"## {title}\n\nCommand: `{command}`  \nMeasured {stamp} on {machine_line()}.\n\n{body.strip()}"
    replace_section(md_path, key, section, header=_HEADER)
