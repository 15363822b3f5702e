"""Network access that fails in seconds when there is no network: name resolution, connecting and
each read wait at most `timeout()` seconds (`NEVISBENCH_NETWORK_TIMEOUT`, default 10), instead of
the minutes a resolver without a network or a server that accepts and never answers can take.

`fail_fast()` applies it to everything `urllib` (and so torch's hub) opens while it is active: the
weights download (`nevisbench.backbones.weights`) and `data prepare --download` run inside it."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["timeout", "fail_fast"]

DEFAULT_TIMEOUT_S = 10.0  # seconds: a resolver or a server slower than this is as good as absent


def timeout() -> float:
    """Seconds a network step may take (`NEVISBENCH_NETWORK_TIMEOUT`, else 10)."""
    try:
        value = float(os.environ.get("NEVISBENCH_NETWORK_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def _resolve_within(resolve: Any, limit: float, host: Any, *args: Any, **kwargs: Any) -> Any:
    """`resolve(host, ...)` (socket.getaddrinfo) in a thread, given up after `limit` seconds: the
    system resolver has no timeout of its own and waits for every configured server in turn."""
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            done["result"] = resolve(host, *args, **kwargs)
        except BaseException as exc:  # handed to the caller
            done["error"] = exc

    thread = threading.Thread(target=work, name="nevisbench-resolve", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise socket.gaierror(socket.EAI_AGAIN, f"resolving {host} took over {limit:g} s (no network?)")
    if "error" in done:
        raise done["error"]
    return done["result"]


@contextlib.contextmanager
def fail_fast(limit: float | None = None) -> Iterator[None]:
    """While active, resolving a name, connecting and each read of a new connection take at most
    `limit` seconds (default `timeout()`); a caller's longer timeout is shortened to it."""
    limit = timeout() if limit is None else limit
    resolve, connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (None, "localhost") or _is_address(host):
            return resolve(host, *args, **kwargs)  # nothing to ask a resolver
        return _resolve_within(resolve, limit, host, *args, **kwargs)

    def create_connection(address: Any, wait: Any = None, *args: Any, **kwargs: Any) -> Any:
        shortest = limit if not isinstance(wait, (int, float)) else min(float(wait), limit)
        return connect(address, shortest, *args, **kwargs)

    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo, socket.create_connection = resolve, connect  # type: ignore[assignment]


def _is_address(host: Any) -> bool:
    text = host.decode() if isinstance(host, bytes) else str(host)
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except (OSError, ValueError):
            continue
    return False
