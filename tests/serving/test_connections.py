"""The server under the app: the optional extras, uvicorn's connection limits, log floods."""

import logging
import sys

import pytest

from whisper_ft.serving.connections import (
    FloodFilter,
    MissingExtrasError,
    quiet_floods,
    require_extras,
)

EXTRAS = "serve needs the optional extras: pip install -r requirements-optional.txt"


def test_missing_extras_say_how_to_install_them(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extras were not installed
    with pytest.raises(MissingExtrasError, match="pip install -r requirements-optional.txt"):
        require_extras()


def test_the_server_runs_with_limits():
    pytest.importorskip("uvicorn", reason=EXTRAS)
    fastapi = pytest.importorskip("fastapi", reason=EXTRAS)
    from whisper_ft.serving.connections import uvicorn_config

    config = uvicorn_config(fastapi.FastAPI())
    # Requests in flight are limited by the app wrapper, not by uvicorn's count of sockets.
    assert (config.limit_concurrency, config.timeout_keep_alive, config.backlog) == (None, 5, 128)
    assert config.h11_max_incomplete_event_size == 16384
    config = uvicorn_config(fastapi.FastAPI(), max_connections=8, keep_alive_s=2)
    assert config.timeout_keep_alive == 2


def test_log_floods_are_quieted(monkeypatch):
    """uvicorn and asyncio log per connection; under a flood that was 558 MB in 70 s."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    quiet_floods()
    try:
        for _ in range(1000):
            logger.error("socket.accept() out of system resource")
        flood = next(f for f in logger.filters if isinstance(f, FloodFilter))
        monkeypatch.setattr(flood, "interval_s", 0.0)
        logger.error("socket.accept() out of system resource")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert records[1].getMessage().endswith("(999 more like it in the last 0 s)")
