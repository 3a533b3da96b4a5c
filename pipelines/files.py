"""Atomic writes: a reader sees the old file (or folder) or the new one, never a half-written one.

Every stage writes through these helpers: a temporary sibling named ``.NAME.tmp-PID-XXXX`` is
filled, then renamed into place. A process killed mid-write (``kill -9``, power loss) leaves its
temporary behind; the next write into the same folder removes such leftovers of processes that
are gone, and says so in one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_STARTED = time.time()  # leftovers are older than this process
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-(?P<pid>\d+)-")


def temporary_prefix(path: Path, kind: str = "tmp") -> str:
    """The name prefix of this process's temporaries for ``path``: ``.NAME.tmp-PID-``."""
    return f".{path.name}.{kind}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike[str], *, extra: str | None = None) -> list[Path]:
    """Removes the temporaries that crashed writers left in ``directory``: ``.NAME.tmp-PID-*`` and
    ``.NAME.old-PID-*`` entries of processes that are gone, and entries matching the regular
    expression ``extra`` (e.g. TensorFlow's ``ckpt-N_temp``); only those older than this process.
    Returns what it removed, after saying so on stderr."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        stale = match is not None and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"]))
        stale |= extra is not None and re.fullmatch(extra, entry.name) is not None
        try:
            if not stale or entry.lstat().st_mtime >= _STARTED:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(entry)
    if removed:
        names = ", ".join(entry.name for entry in removed)
        print(f"tfcroloss: removed {len(removed)} leftover(s) of an interrupted write in {directory}: {names}",
              file=sys.stderr, flush=True)
    return removed


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fails now, with a clear message, if ``path`` could not be created later: its nearest
    existing ancestor must be a writable directory."""
    path = Path(path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: no permission to write in {ancestor}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write; renamed to ``path`` on success (replacing
    it), removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file in the same folder, synced, and a rename."""
    with atomic_file(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``, renamed to ``path`` on success and removed on
    failure. An existing ``path`` is replaced only with ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=temporary_prefix(path, "old"), dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
