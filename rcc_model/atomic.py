"""Atomic writes: after a crash at any point, what a writer was replacing reads either as it was or as new.

Every rcc writer goes through one of three helpers:

- `atomic_file(path)`: write a temporary sibling, flush it to disk, rename it over `path` (`os.replace` is atomic).
- `atomic_folder(folder, kind)`: write the files of a checkpoint or index into a staging folder inside `folder`,
  then commit them with a journal, `.rcc-files.json`, replaced atomically: it names the new files, the staging
  folder they wait in and the files of the previous version the new one lacks. Writing it is the commit point:
  a kill before it leaves the previous version untouched, a kill after it is finished by `recover(folder)`,
  which every rcc loader and writer runs first (as SQLite rolls a hot journal on the next open). Only files the
  journal lists are ever replaced or removed: a user's other files in the folder are never touched, and a
  non-empty folder rcc did not write is refused.
- `fresh_folder(target)`: build a folder (a cache entry) beside `target` and rename it into place; the first
  writer wins.

One writer at a time per folder, as with any file a program rewrites. Temporaries carry their writer's process
id and are removed by a later write once that process has ended. Everything is created with the permissions the
umask gives (not mkstemp's 0600), and a file replaced keeps its mode; saving onto a symbolic link writes the file
it points to and keeps the link.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

JOURNAL = ".rcc-files.json"
TMP_SUFFIX = ".rcc-tmp"
STAGING = ".rcc-staging."
_abandoned: set[Path] = set()  # temporaries this process failed to remove: stale although their writer lives


# ---------------------------------------------------------------------------------------------- one file
@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a new empty temporary file beside `path` to write (by its path); when the block succeeds it is
    synced and renamed over `path`, when it raises `path` is left as it was and the temporary removed.

    A `path` that is a symbolic link is written through: the file it points to is replaced, the link kept
    (a dangling link is refused)."""
    target = _write_target(Path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, f".{target.name}.")
    tmp = target.with_name(f".{target.name}.{_tag()}{TMP_SUFFIX}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies, unlike mkstemp's 0600
    try:
        yield tmp
        _sync(tmp)
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except BaseException:
        _discard(tmp)
        raise
    _sync(target.parent)


def _write_target(path: Path) -> Path:
    if path.is_symlink():
        resolved = Path(os.path.realpath(path))
        if not resolved.exists():
            raise FileNotFoundError(f"{path} is a symbolic link to {resolved}, which does not exist: rcc writes "
                                    "through a link, not over it; create the target or remove the link")
        path = resolved
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the path of a file to write")
    return path


# ---------------------------------------------------------------------------------------------- a folder's files
@contextmanager
def atomic_folder(folder: str | Path, kind: str, accepts: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder to write a `kind` (e.g. "rcc-checkpoint") into; when the block succeeds its
    files replace the previous version's in `folder`, atomically as a whole (see the module docstring).

    `folder` must be new, empty, or one this `kind` was written to before (its journal says so, or, for a
    folder an older rcc wrote without one, `accepts(folder)` does); anything else is refused with ValueError
    before anything is written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file: give a folder to write the {kind} into")
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    previous = _previous_files(folder, kind, accepts)
    staging = folder / f"{STAGING}{_tag()}"
    staging.mkdir()
    try:
        yield staging
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if not p.is_dir())
        if previous is None:  # an older rcc's folder: it owned what the new version writes, subfolders whole
            tops = {rel.split("/")[0] for rel in files if "/" in rel}
            previous = {rel for rel in _files_under(folder) if rel in files or rel.split("/")[0] in tops}
        for rel in files:
            if (folder / rel).is_dir():
                raise IsADirectoryError(f"{folder / rel} is a folder where the {kind} writes its file {rel}: "
                                        "move it away and write again")
        _sync_tree(staging)
        journal = {"kind": kind, "files": files, "staging": staging.name,
                   "obsolete": sorted(set(previous) - set(files))}
        _write_journal(folder, journal)  # the commit point
        _finish(folder, journal)
    except BaseException:
        if (_read_journal(folder) or {}).get("staging") != staging.name:  # not committed: discard
            _discard(staging)
        raise


def recover(folder: str | Path) -> bool:
    """Finish a write into `folder` interrupted after its commit point, and remove temporaries that ended
    writers left; True when an interrupted write was finished. Loaders call it before reading."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    journal = _read_journal(folder)
    finished = journal is not None and "staging" in journal
    if finished:
        try:
            _finish(folder, journal)
        except OSError as e:
            raise PermissionError(f"{folder} holds a write that was interrupted after it committed ({JOURNAL}); "
                                  f"it must be finished before the folder is read, which failed: {e}. Open it "
                                  "once with write permission") from e
    _remove_stale(folder, STAGING, suffix="")
    _remove_stale(folder, f"{JOURNAL}.")
    return finished


def _finish(folder: Path, journal: dict) -> None:
    """Move the committed files into place, remove the obsolete ones, then record the new version; idempotent,
    so a kill while it runs is finished by running it again."""
    staging = folder / journal["staging"]
    for rel in journal["files"]:
        source = staging / rel
        if source.is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, folder / rel)
    for rel in journal["obsolete"]:
        (folder / rel).unlink(missing_ok=True)
        parent = (folder / rel).parent
        while parent != folder and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    _sync(folder)
    _discard(staging)
    _write_journal(folder, {"kind": journal["kind"], "files": journal["files"]})


def _previous_files(folder: Path, kind: str, accepts: Callable[[Path], bool] | None) -> set[str] | None:
    """The files of the version in `folder` (empty for a new folder; None for an older rcc's folder)."""
    journal = _read_journal(folder)
    if journal is not None:
        if journal["kind"] != kind:
            raise ValueError(f"{folder} holds an {journal['kind']}, not an {kind}: write the {kind} to "
                             "another folder")
        return set(journal["files"])
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return set()
    if accepts is not None and accepts(folder):
        return None
    raise ValueError(f"{folder} is not empty ({len(entries)} entries: {', '.join(entries[:3])}"
                     f"{', ...' if len(entries) > 3 else ''}) and holds no {kind}: rcc writes only into a new or "
                     f"empty folder or over an {kind} it wrote, so that it never removes your files; choose "
                     "another folder")


def _files_under(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if not p.is_dir() and not p.relative_to(folder).as_posix().startswith((STAGING, JOURNAL))]


def _read_journal(folder: Path) -> dict | None:
    path = folder / JOURNAL
    if not path.is_file():
        return None
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        names = [*journal["files"], *journal.get("obsolete", [])]
        if not isinstance(journal["kind"], str) or not all(isinstance(n, str) for n in names):
            raise TypeError("kind and file names must be strings")
        if "staging" in journal and not re.fullmatch(rf"{re.escape(STAGING)}\d+-[0-9a-f]+", str(journal["staging"])):
            raise ValueError(f"staging folder {journal['staging']!r} is not one rcc names")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}): it lists the files rcc wrote in {folder}; "
                         "restore it, or write to a new folder") from e
    for name in names:
        confined(folder, name, source=path)
    return journal


def _write_journal(folder: Path, journal: dict) -> None:
    with atomic_file(folder / JOURNAL) as tmp:
        tmp.write_text(json.dumps(journal, indent=1), encoding="utf-8")


def confined(folder: Path, name: str, source: str | Path) -> Path:
    """`folder / name`, refusing a `name` (read from `source`) that would lead outside `folder`: absolute, with
    `..`, or through a symbolic link."""
    path = folder / name
    relative = Path(name)
    if (not name or relative.is_absolute() or ".." in relative.parts
            or not os.path.realpath(path).startswith(os.path.join(os.path.realpath(folder), ""))):
        raise ValueError(f"{source} names {name!r}, which is outside {folder}: rcc reads and writes only files "
                         "inside the folder; the file was edited or crafted, restore it")
    return path


# ---------------------------------------------------------------------------------------------- a new folder
@contextmanager
def fresh_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target` to fill; when the block succeeds it is renamed to
    `target`, unless a concurrent writer made `target` first (then that one is kept and this one discarded)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, f".{target.name}.")
    tmp = target.with_name(f".{target.name}.{_tag()}{TMP_SUFFIX}")
    tmp.mkdir()
    try:
        yield tmp
        _sync_tree(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.exists():  # lost no race: a real failure
                raise
        _sync(target.parent)
    finally:
        _discard(tmp)


# ---------------------------------------------------------------------------------------------- helpers
def _tag() -> str:
    """The writer's process id and a random part: names a temporary and says when it is stale."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _remove_stale(folder: Path, prefix: str, suffix: str = TMP_SUFFIX) -> None:
    """Remove the temporaries in `folder` named `prefix`, a writer's tag, `suffix` whose writer has ended (or
    that this process failed to remove before)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)-[0-9a-f]+{re.escape(suffix)}$")
    for path in folder.iterdir():
        match = pattern.match(path.name)
        if match and (path in _abandoned or not _alive(int(match.group(1)))):
            _discard(path)


def _discard(path: Path) -> None:
    """Remove a temporary file or folder; one that cannot be removed now is left for the next write."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        _abandoned.add(path)
    else:
        _abandoned.discard(path)


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # never guess on platforms without signal 0
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _sync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders that hold them
        if not path.is_symlink():  # a link is an entry of its folder; its target, maybe dangling, is not ours
            _sync(path)
    _sync(folder)


def _sync(path: Path) -> None:
    """Flush a file's data (or a folder's entries) to disk, so that a rename after it never exposes a file the
    disk has not got; folders that cannot be opened for it (Windows, some filesystems) are left to the OS."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)
