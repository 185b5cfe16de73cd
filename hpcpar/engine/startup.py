"""Before an engine serves: where its controller is (connection file, or asking a client
port), and what an MPI rank adds (its rank and size in the namespace, the id it asks for)."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import zmq

from .. import security, wire
from ..connection import ConnectionInfo

if TYPE_CHECKING:
    from .app import Engine


class RegistrationError(RuntimeError):
    pass


def load_engine_connection(path: str | None, profile_dir: Any, cluster_id: str, wait: float) -> ConnectionInfo:
    """Connection info from --file, $HPCPAR_CONNECTION_INFO, or the profile (waiting for it).

    A client file works too: the engine asks the controller's client port
    where the engine port is.
    """
    info = ConnectionInfo.from_env()
    if info is None or path is not None:
        target = path or str(profile_dir.engine_file(cluster_id))
        deadline = time.monotonic() + wait
        while not os.path.exists(target) and time.monotonic() < deadline:
            time.sleep(0.1)
        info = ConnectionInfo.load(target)
    if info.role == "client":
        info = _engine_info_via_client_port(info, timeout=max(wait, 5.0))
    return info


def _engine_info_via_client_port(info: ConnectionInfo, timeout: float) -> ConnectionInfo:
    signer = wire.Signer(info.key_bytes, info.transport)
    ctx = zmq.Context.instance()
    for url in info.urls:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, signer.session.encode())  # answers go to the session's socket
        security.connect_as(sock, info)
        sock.connect(url)
        try:
            sock.send_multipart(signer.pack(signer.header("engine_info_request", route="controller")))
            if sock.poll(int(timeout * 1000)):
                msg = signer.unpack(sock.recv_multipart(copy=False))
                if msg.msg_type == "engine_info_reply":
                    # The client's Curve keys also open the engine port (the controller allows them).
                    return dataclasses.replace(info, urls=list(msg.meta["urls"]), role="engine", ssh=None,
                                               extra={})
        except wire.BadMessage:
            pass
        finally:
            sock.close()
    raise RegistrationError(
        f"no controller answered at {', '.join(info.urls)} (client connection file); "
        "is the controller running?"
    )


def init_mpi(engine: Engine) -> None:
    try:
        from mpi4py import MPI
    except ImportError:
        raise SystemExit(
            "MPI engines need mpi4py: install it with  pip install 'hpcpar[mpi]'"
        ) from None
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    # One id for the whole job, so a client can tell which engines share COMM_WORLD.
    world = comm.bcast(uuid.uuid4().hex if rank == 0 else None, root=0)
    try:  # Cluster.restart_engines gives a restarted MPI set its old ids: base + rank
        id_base = int(os.environ.get("HPCPAR_MPI_ID_BASE") or 0)
    except ValueError:
        id_base = 0
    engine.options.requested_id = id_base + rank
    engine.extra_info.update(mpi_rank=rank, mpi_size=size, mpi_world=world)
    engine.ns.reset({"MPI": MPI, "comm": comm, "mpi_rank": rank, "mpi_size": size})
    # Spread a registration burst of many ranks: rank r waits r * delay / 100 seconds.
    try:
        delay = float(os.environ.get("HPCPAR_MPI_REGISTRATION_DELAY") or 0.0)
    except ValueError:
        delay = 0.0
    if delay > 0 and rank:
        time.sleep(min(rank * delay / 100.0, 60.0))
