"""Writing files so that a reader, a crash or a kill never sees half of one."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it is flushed to disk and
    renamed over `path`, on an error it is removed and `path` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps two writers of the same file (DDP ranks, parallel jobs) apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_root() -> Path:
    """Where whisper-ft keeps what it computes once (data checks, assembled weights):
    `$WHISPER_FT_CACHE` if set, else `$XDG_CACHE_HOME/whisper_ft`, else `~/.cache/whisper_ft`
    (Whisper caches its models by the same XDG rule)."""
    if os.environ.get("WHISPER_FT_CACHE"):
        return Path(os.environ["WHISPER_FT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper_ft"
