"""``nas-optuna storage-proxy``: Optuna's gRPC storage proxy in front of one storage.

Many workers (hundreds) connecting straight to PostgreSQL or MySQL each hold connections
and poll the database; the proxy holds one storage with Optuna's cache and answers them
over gRPC. Workers then use ``--storage grpc://HOST:PORT``. The proxy serves RDB storages
(Optuna's gRPC server does not support journal storages). Beside Optuna's storage service
it serves nas-optuna's study lock, which keeps ``n_trials`` exact across the workers.

Example:
    $ nas-optuna storage-proxy --storage postgresql://user@db/nas --host 0.0.0.0 --port 13000
    $ nas-optuna search studies/quickstart.toml --storage grpc://proxy-host:13000
"""

from __future__ import annotations

import argparse

from nas_optuna.exceptions import ConfigError

NAME = "storage-proxy"
HELP = "serve a storage to many workers through Optuna's gRPC proxy"


def add_arguments(proxy: argparse.ArgumentParser) -> None:
    proxy.add_argument("--storage", required=True,
                       help="RDB storage URL to serve, e.g. postgresql://user@host/db")
    proxy.add_argument("--host", default="localhost",
                       help="address to listen on (default localhost; 0.0.0.0: every interface)")
    proxy.add_argument("--port", type=int, default=13000, help="port (default 13000)")


def run(args: argparse.Namespace) -> int:
    import optuna

    from nas_optuna.storage import mask_url, open_storage

    if args.storage.startswith(("journal://", "redis://", "rediss://", "unix://", "grpc://")):
        raise ConfigError(f"storage-proxy serves RDB storages (sqlite, postgresql, mysql), "
                          f"not {mask_url(args.storage)}")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    # Heartbeats are recorded and checked by the workers (grpc:// clients), not here.
    storage = optuna.storages.get_storage(open_storage(args.storage))  # with Optuna's cache
    # Optuna's server plus nas-optuna's study lock on the same port, so that workers behind
    # the proxy keep n_trials exact (nas_optuna/_grpc_lock.py). make_server is what
    # optuna.storages.run_grpc_proxy_server runs before start(); the gRPC worker tests
    # catch it if that changes.
    from optuna.storages._grpc.server import make_server

    from nas_optuna._grpc_lock import add_study_lock_service

    server = make_server(storage, args.host, args.port)
    add_study_lock_service(server)
    server.start()
    print(f"serving {mask_url(args.storage)} on grpc://{args.host}:{args.port}", flush=True)
    server.wait_for_termination()
    return 0
