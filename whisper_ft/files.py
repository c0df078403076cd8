"""Writing files so that a reader, a crash or a kill never sees half of one."""

import errno
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `.NAME.HOST-PID.tmp` (and `.NAME.PID.tmp`, as written before the host was in the name).
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:(?P<host>[^./]+)-)?(?P<pid>\d+)\.tmp")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it is flushed to disk,
    renamed over `path` and the rename itself made durable (the folder fsynced); on an error it
    is removed and `path` keeps its previous content. Temporaries that killed writers left in
    the folder (`remove_stale_temporaries`) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    # Host and process id keep two writers of the same file (DDP ranks, parallel jobs, nodes
    # sharing a disk) apart, and tell a dead writer's leftover from a live one's.
    tmp = path.with_name(f".{path.name}.{_host()}-{os.getpid()}.tmp")
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def cache_root() -> Path:
    """Where whisper-ft keeps what it computes once (data checks, assembled weights):
    `$WHISPER_FT_CACHE` if set, else `$XDG_CACHE_HOME/whisper_ft`, else `~/.cache/whisper_ft`
    (Whisper caches its models by the same XDG rule)."""
    if os.environ.get("WHISPER_FT_CACHE"):
        return Path(os.environ["WHISPER_FT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper_ft"


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Removes the `atomic_write` temporaries in `folder` whose writer was this machine's and
    is no longer running (killed mid-write: a checkpoint's can be hundreds of MB); returns
    them. Another machine's, and a running process's, are left alone."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(tmp.name)
        if match is None or match["host"] not in (None, _host()):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _running(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable: without it a power cut can undo the rename."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some filesystems (FUSE mounts such as Google Drive, some network shares) cannot
        # sync a folder; the rename is done and is as durable as they make it.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)
