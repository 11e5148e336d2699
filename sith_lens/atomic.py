"""Atomic file writes: write to a temporary file in the target folder, then rename over the target.

A crash or an exception mid-write never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary file is ``.NAME.PID.XXXX.tmp``: a later write to ``path`` removes those of
    writers that were killed.

    Example:
        >>> with atomic_path("notes.txt") as tmp:        # a temporary file beside notes.txt
        ...     _ = tmp.write_text("done")
        >>> Path("notes.txt").read_text()
        'done'
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of {path} does not exist; create it first")
    for stale in path.parent.glob(f".{path.name}.*{suffix}"):  # left by writers that were killed
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # again: a writer may have replaced the file (safetensors does)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path.

    Example:
        >>> write_text_atomic("result.json", '{"k": 5}').read_text()
        '{"k": 5}'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


#: Leftovers of an interrupted ``atomic_directory``: the previous output while it is swapped out,
#: and the folders being written, with the writer's process id in a marker file.
OLD_SUFFIX = ".old"
TMP_INFIX = ".tmp-"
OWNER_FILE = ".sith-lens-writer"


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}{OLD_SUFFIX}")


def recover_directory(path: str | os.PathLike) -> bool:
    """Repair what a killed ``atomic_directory`` left next to ``path``; True if ``path`` was restored.

    A kill between the two renames of the swap leaves ``path`` missing and the previous output in
    ``.NAME.old``: it is moved back. A kill after the swap leaves ``.NAME.old`` next to the new
    output: it is removed. Temporary folders of writers that are no longer running are removed.
    Loaders call this, so an interrupted write never hides the previous output.

    Example:
        >>> recover_directory(Path("runs/sith-out"))
        False
    """
    import shutil

    path = Path(path)
    if not path.parent.is_dir():
        return False
    restored = False
    old = _old(path)
    if old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                old.rename(path)
                restored = True
            except OSError:  # another process restored it first
                pass
    for tmp in path.parent.glob(f".{path.name}{TMP_INFIX}*"):
        try:
            pid = int((tmp / OWNER_FILE).read_text())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
    return restored


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (an existing folder
    is swapped out only after the new one is complete), on error it is removed.

    A kill at any moment leaves either the previous output or the new one at ``path``, once
    ``recover_directory`` has run (the next write and the loaders run it).

    Example:
        >>> with atomic_directory("out/checkpoint") as tmp:   # lands whole, or not at all
        ...     _ = (tmp / "weights.txt").write_text("1 2 3")
        >>> sorted(p.name for p in Path("out/checkpoint").iterdir())
        ['weights.txt']
    """
    import shutil

    path = Path(path)
    if path.parent.is_dir():
        recover_directory(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is a file; pass a folder path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_INFIX}", dir=path.parent))
    (tmp / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield tmp
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700; give the folder the usual permissions
        for file in tmp.rglob("*"):  # and its files (some writers create them 0600)
            if file.is_file():
                file.chmod(0o666 & ~umask)
        if path.exists():
            old = _old(path)
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: str | os.PathLike) -> str:
    """The blake2b (16-byte) hex digest of a file's bytes, read in 4 MiB chunks.

    Example:
        >>> _ = write_text_atomic("shard.txt", "abc")
        >>> len(file_digest("shard.txt")), file_digest("shard.txt") == file_digest("shard.txt")
        (32, True)
    """
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
