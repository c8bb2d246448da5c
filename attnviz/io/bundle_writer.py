"""Writing an export bundle to a folder (:func:`write_bundle`) or into a ZIP (:func:`zip_bundle`).

A bundle maps relative POSIX paths to file contents. Every path is checked before anything is
written: absolute paths, ``..``, ``.`` or empty components, backslashes and drive letters are
refused, so that neither a folder nor an archive can be written outside its root.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

__all__ = ["write_bundle", "zip_bundle"]

log = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")


def _check_path(path: object) -> PurePosixPath:
    """A bundle path as a relative POSIX path with plain components, or ValueError."""
    if not isinstance(path, str):
        raise TypeError(f"bundle paths must be strings, got {type(path).__name__}")
    bad = (
        not path
        or "\\" in path
        or "\x00" in path
        or path.startswith("/")
        or _DRIVE.match(path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise ValueError(f"unsafe bundle path {path!r}: expected a relative path inside the bundle")
    return PurePosixPath(path)


def _check_files(files: Mapping[str, bytes]) -> list[tuple[PurePosixPath, bytes]]:
    if not isinstance(files, Mapping):
        raise TypeError(f"files must be a mapping of paths to bytes, got {type(files).__name__}")
    checked = []
    for path, content in files.items():
        rel = _check_path(path)
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"content of {path!r} must be bytes, got {type(content).__name__}")
        checked.append((rel, bytes(content)))
    names = {rel for rel, _ in checked}
    for rel, _ in checked:
        clash = next((p for p in rel.parents if p in names), None)
        if clash is not None:
            raise ValueError(
                f"bundle path {str(rel)!r} needs {str(clash)!r} to be a folder, but it is a file"
            )
    return checked


def _safe_parent(root: Path, rel: PurePosixPath) -> Path:
    """Creates the folders of ``rel`` under ``root``, refusing any that is a symlink or not a folder."""
    current = root
    for part in rel.parts[:-1]:
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            current.mkdir()
            continue
        if stat.S_ISLNK(info.st_mode):
            raise ValueError(f"refusing to write through the symbolic link {current}")
        if not stat.S_ISDIR(info.st_mode):
            raise ValueError(f"cannot create the folder {current}: a file is in the way")
    return current


def write_bundle(files: Mapping[str, bytes], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Writes a bundle into ``out_dir``, creating folders; never writes outside it.

    Every path is checked before anything is written: absolute paths, ``..``, ``.`` or empty
    components, backslashes and drive letters are refused. While writing, an existing symbolic
    link among the folders or files inside ``out_dir`` is refused rather than followed, so a
    planted link cannot redirect a write. Existing files of the same name are replaced (through a
    temporary file and a rename); other files in ``out_dir`` are left alone.

    Args:
        files: relative POSIX path -> content, as from :func:`export_files`.
        out_dir: destination folder (created if missing; it may itself be a link to a folder).

    Returns:
        The written paths (``out_dir / path``), in the order of ``files``.

    Raises:
        ValueError: a path would escape ``out_dir`` or clashes with a file or link.
        TypeError: a path is not a string or a content is not bytes.
        OSError: the file system refused a write.
    """
    checked = _check_files(files)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve(strict=True)
    written = []
    for rel, content in checked:
        parent = _safe_parent(real_root, rel)
        target = parent / rel.name
        if target.is_symlink():
            raise ValueError(f"refusing to overwrite the symbolic link {target}")
        if target.exists() and not target.is_file():
            raise ValueError(f"cannot write {target}: something that is not a file is in the way")
        tmp = parent / f".{rel.name}.{os.getpid()}.tmp"
        # O_EXCL|O_NOFOLLOW: never open through a link someone planted under the temporary name.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(tmp, target)  # replaces a link itself, never its target
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written.append(root / rel)
    log.info("wrote %d files to %s", len(written), root)
    return written


def zip_bundle(files: Mapping[str, bytes]) -> bytes:
    """Packs a bundle into an in-memory ZIP archive (deflate).

    Paths are checked as in :func:`write_bundle`, so the archive unpacks safely.

    Args:
        files: relative POSIX path -> content, as from :func:`export_files`.

    Returns:
        The ZIP file's bytes; entries in the order of ``files``, stamped with the current time.

    Raises:
        ValueError: a path that would escape the archive's root.
        TypeError: a path is not a string or a content is not bytes.
    """
    checked = _check_files(files)
    stamp = time.localtime()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, content in checked:
            info = zipfile.ZipInfo(str(rel), date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, content)
    return buf.getvalue()
