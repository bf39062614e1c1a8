"""Files written so that a crash, a full disk or a second process never leaves them half-written.

Several notebooks, the course runner and the ranking widget may write the same file at once,
and a kernel can be killed mid-write. Every module that writes such a file goes through here:

* ``replace_file``: a whole new content, atomically (a temporary file renamed over the old one)
  and durably (forced to disk): a crash leaves the old file or the new one, never half of one.
* ``append_lines``: whole lines appended under the file's lock, forced to disk, and cut off
  again if the write fails part way (a full disk), so the file is exactly as it was.
* ``rewrite_file``: read, change and replace a file under its lock, so no append or rewrite by
  another process in the meantime is lost.
* ``locked`` / ``lock_open_file``: advisory locks, on a path or on a file already open. File
  systems that cannot lock (some network and FUSE mounts, such as Google Drive in Colab, and
  Windows) are used without a lock rather than not at all.
* ``describe_os_error``: what an OSError from writing means, in words a student can act on.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one notebook writing at a time is safe there
    fcntl = None

# --------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------

#: flock() errors that mean "this file system cannot lock" (some network and FUSE mounts, such
#: as Google Drive in Colab): there the file is used without a lock rather than not at all.
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1)}


def lock_open_file(handle, exclusive: bool = True) -> bool:
    """Lock an open file, shared or exclusive, waiting for other holders; False where locking is
    impossible (Windows, a file system that cannot lock), and the file is then used unlocked.

    ``handle`` is a file object or a file descriptor. The lock is released when the file is
    closed. Other OSErrors (not the file systems' "cannot lock") are raised.
    """
    if fcntl is None:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    except OSError as error:
        if error.errno in _NO_LOCKING:
            return False
        raise
    return True


def _is_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def locked(path: Path | str, exclusive: bool = True, create: bool = True) -> Iterator[int]:
    """Open ``path`` and hold its lock while the block runs; yields the file descriptor.

    Exclusive (writers): opened for reading and appending, created if missing unless ``create``
    is False. Shared (readers): opened read-only; FileNotFoundError if there is no file.

    The lock is taken on the file itself, so no lock file is left beside it. A writer that
    replaces the file (``replace_file``, as ``rewrite_file`` does) leaves whoever waited for the
    old file holding the lock of a file that is no longer at ``path``: they notice and start over
    on the new one, so nothing is ever written into a replaced file and lost with it.
    """
    path = Path(path)
    flags = (os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)) if exclusive else os.O_RDONLY
    flags |= getattr(os, "O_BINARY", 0)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            if not lock_open_file(fd, exclusive) or _is_at(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced (or removed) while we waited: lock the file now at path
    try:
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def read_all(fd: int) -> bytes:
    """The whole content of an open file (from its start, wherever its offset was)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # write() may write less than asked (a signal, a nearly full disk)
        view = view[os.write(fd, view):]


def _fsync_directory(directory: Path) -> None:
    try:  # makes a rename itself durable; not possible on every platform (Windows)
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_file(path: Path | str, data: bytes) -> None:
    """Make ``data`` the content of ``path``, atomically and durably.

    The data goes to a temporary file in the same folder, forced to disk, which then replaces
    ``path`` with ``os.replace``: a crash leaves the old file or the new one, never half of one,
    and a failed write (a full disk) leaves the old file untouched. Callers that read the file
    first use ``rewrite_file`` (or hold ``locked(path)`` around the read and this call), so no
    concurrent append is lost.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(temporary, mode)  # mkstemp creates 0600; keep the file's own permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def rewrite_file(path: Path | str, change: Callable[[bytes], bytes | None]) -> bool:
    """Replace the content of ``path`` with ``change(its content)``, holding its lock throughout.

    Appenders and other rewriters take the same lock, so nothing they write meanwhile is lost;
    the new content is written with ``replace_file`` (a crash leaves the old file or the new
    one). ``change`` returns None to leave the file as it is. A missing file is created (empty)
    first. Returns whether the file was replaced.
    """
    path = Path(path)
    with locked(path) as fd:
        data = change(read_all(fd))
        if data is None:
            return False
        if fcntl is not None:
            replace_file(path, data)  # before the lock is let go: no append can slip in between
            return True
    replace_file(path, data)  # Windows: no lock to hold, and a file open there cannot be replaced
    return True


def append_lines(path: Path | str, data: bytes) -> None:
    """Append whole lines (``data`` ends with a newline) to ``path`` and force them to disk.

    Under the file's lock, one write at the end. A last line cut short by a crash (no newline at
    its end) is closed first, so the new lines never fuse with it. If the write fails (a full
    disk, a quota, an interrupt), the file is cut back to its size before the write and the error
    raised: half a line would read as corrupt on every reopen.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path) as fd:
        size = os.fstat(fd).st_size
        if size and os.lseek(fd, size - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
            data = b"\n" + data  # (the write still goes to the end: O_APPEND)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            with suppress(OSError):  # truncating frees space, so it works on a full disk
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise


# --------------------------------------------------------------------------------------------
# Errors in words
# --------------------------------------------------------------------------------------------

#: What an OSError on a file the course writes means, in words a student can act on.
_OS_ERROR_WORDS = {
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", None): "your disk quota is used up",  # (no EDQUOT on Windows)
    errno.EROFS: "the disk is read-only",
    errno.EACCES: "you have no permission to write there",
    errno.EPERM: "you have no permission to write there",
    errno.EIO: "the disk reported a read/write error",
}


def describe_os_error(error: OSError) -> str:
    """'the disk is full (No space left on device)' for an OSError; its own text otherwise."""
    words = _OS_ERROR_WORDS.get(error.errno)
    detail = error.strerror or str(error)
    return f"{words} ({detail})" if words else detail
