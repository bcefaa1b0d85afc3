"""A study lock served beside Optuna's gRPC storage proxy.

Optuna's gRPC proxy offers storage calls only, so workers behind it had no lock around
"count the study's trials, then start one" and could overshoot ``n_trials``.
``nas-optuna storage-proxy`` therefore serves one more gRPC service on the same port,
``nas_optuna.StudyLock``: leases keyed by name, with two unary calls that never block a
server thread (a blocking wait would let waiting workers fill the proxy's thread pool and
starve the holder's own storage calls):

* ``Acquire(name, owner, ttl)`` -> ``b"1"`` when ``owner`` now holds ``name``, else
  ``b"0"``. A lease whose holder did not release it within ``ttl`` seconds (the holder
  died) is free again, as with the Redis lock.
* ``Release(name, owner)`` frees the lease if ``owner`` holds it.

Clients poll ``Acquire`` with a short jittered sleep. A proxy started without the service
(Optuna's ``run_grpc_proxy_server`` directly) answers UNIMPLEMENTED; the client then warns
once and goes on without a cross-process lock, as before.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["add_study_lock_service", "grpc_study_lock"]

_SERVICE = "nas_optuna.StudyLock"
_ACQUIRE = f"/{_SERVICE}/Acquire"
_RELEASE = f"/{_SERVICE}/Release"
#: Seconds after which an unreleased lease is free again (its holder died).
LEASE_TTL_S = 300.0
_POLL_S = (0.02, 0.1)


class _Leases:
    """Server-side state: name -> (owner, expiry on the server's monotonic clock)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, request: bytes, context: Any) -> bytes:
        fields = json.loads(request)
        now = time.monotonic()
        with self._guard:
            holder = self._held.get(fields["name"])
            if holder is None or holder[0] == fields["owner"] or holder[1] <= now:
                self._held[fields["name"]] = (fields["owner"], now + float(fields["ttl"]))
                return b"1"
        return b"0"

    def release(self, request: bytes, context: Any) -> bytes:
        fields = json.loads(request)
        with self._guard:
            if self._held.get(fields["name"], ("",))[0] == fields["owner"]:
                del self._held[fields["name"]]
        return b""


def add_study_lock_service(server: Any) -> None:
    """Adds the ``nas_optuna.StudyLock`` service to a ``grpc.Server`` (before ``start``)."""
    import grpc

    leases = _Leases()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, {
        "Acquire": grpc.unary_unary_rpc_method_handler(leases.acquire),
        "Release": grpc.unary_unary_rpc_method_handler(leases.release),
    }),))


_CHANNELS: dict[str, Any] = {}
_CHANNELS_GUARD = threading.Lock()
_WARNED: set[str] = set()


def _channel(target: str) -> Any:
    import grpc

    with _CHANNELS_GUARD:
        if target not in _CHANNELS:
            _CHANNELS[target] = grpc.insecure_channel(target)
        return _CHANNELS[target]


@contextlib.contextmanager
def grpc_study_lock(target: str, name: str, *, ttl: float = LEASE_TTL_S) -> Iterator[None]:
    """Holds the lease ``name`` on the proxy at ``target`` (``host:port``), blocking.

    Example:
        >>> with grpc_study_lock("localhost:13000", "nas-optuna:study"):  # doctest: +SKIP
        ...     pass  # count the trials, create one
    """
    import grpc

    channel = _channel(target)
    acquire = channel.unary_unary(_ACQUIRE)
    owner: str | None = uuid.uuid4().hex
    request = json.dumps({"name": name, "owner": owner, "ttl": ttl}).encode()
    try:
        while acquire(request, timeout=30) != b"1":
            time.sleep(random.uniform(*_POLL_S))
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        if target not in _WARNED:
            _WARNED.add(target)
            warnings.warn(f"the gRPC proxy at {target} serves no study lock (not started "
                          f"with `nas-optuna storage-proxy`): workers may start up to "
                          f"workers - 1 trials over n_trials", stacklevel=3)
        owner = None
    if owner is None:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(grpc.RpcError):  # else the lease expires on its own
            channel.unary_unary(_RELEASE)(
                json.dumps({"name": name, "owner": owner}).encode(), timeout=30)
