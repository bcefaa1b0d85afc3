"""The study lock served by ``nas-optuna storage-proxy`` beside Optuna's gRPC proxy."""

from __future__ import annotations

import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator

import optuna
import pytest
from optuna.storages._grpc.server import make_server

from nas_optuna._grpc_lock import _Leases, add_study_lock_service, grpc_study_lock


def _request(name: str, owner: str, ttl: float = 60.0) -> bytes:
    return json.dumps({"name": name, "owner": owner, "ttl": ttl}).encode()


def test_a_lease_has_one_holder_until_released_or_expired() -> None:
    leases = _Leases()
    assert leases.acquire(_request("study", "a"), None) == b"1"
    assert leases.acquire(_request("study", "b"), None) == b"0"
    assert leases.acquire(_request("other", "b"), None) == b"1"  # per name
    leases.release(json.dumps({"name": "study", "owner": "b"}).encode(), None)  # not b's
    assert leases.acquire(_request("study", "b"), None) == b"0"
    leases.release(json.dumps({"name": "study", "owner": "a"}).encode(), None)
    assert leases.acquire(_request("study", "b", ttl=0.05), None) == b"1"
    time.sleep(0.1)  # b "died" holding it: the lease expires
    assert leases.acquire(_request("study", "c"), None) == b"1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def proxy_target(request: pytest.FixtureRequest) -> Iterator[str]:
    port = _free_port()
    server = make_server(optuna.storages.InMemoryStorage(), "localhost", port)
    if request.param:
        add_study_lock_service(server)
    server.start()
    yield f"localhost:{port}"
    server.stop(None)


@pytest.mark.parametrize("proxy_target", [True], indirect=True)
def test_threads_through_the_proxy_hold_the_lock_one_at_a_time(proxy_target: str) -> None:
    inside, overlaps, entries = [0], [], []
    guard = threading.Lock()

    def work(index: int) -> None:
        for _ in range(5):
            with grpc_study_lock(proxy_target, "nas-optuna:study"):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0])
                time.sleep(0.005)
                with guard:
                    inside[0] -= 1
                    entries.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(entries) == sorted(list(range(4)) * 5)
    assert max(overlaps) == 1


@pytest.mark.parametrize("proxy_target", [False], indirect=True)
def test_a_plain_optuna_proxy_warns_once_and_goes_on(proxy_target: str) -> None:
    with pytest.warns(UserWarning, match="serves no study lock"):
        with grpc_study_lock(proxy_target, "nas-optuna:study"):
            pass
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        with grpc_study_lock(proxy_target, "nas-optuna:study"):
            pass
    assert not again  # once per proxy
