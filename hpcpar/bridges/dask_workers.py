"""dask.distributed on the cluster: a scheduler in the controller, a worker in each engine.

As ipyparallel's ``become_dask``: the controller's hub runs a ``distributed.Scheduler``
(here on a thread of its own, with its own event loop, off the controller's loop),
each engine runs a ``distributed.Worker`` (or ``Nanny``) the same way, and the client
gets a ``distributed.Client`` connected to the scheduler. ``stop_dask`` stops them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

INSTALL = "pip install 'dask[distributed]'"
START_TIMEOUT = 60.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ImportError(f"become_dask needs dask.distributed where this runs: {INSTALL}") from e
    return distributed


class ServerThread:
    """One dask server (scheduler, worker or nanny) on a thread with its own event loop."""

    def __init__(self, make: Any) -> None:
        self._make = make  # async () -> started server
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.server: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="hpcpar-dask", daemon=True)

    def start(self) -> Any:
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError(f"the dask server did not start within {START_TIMEOUT:.0f} s")
        if self.error is not None:
            raise self.error
        return self.server

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.server = await self._make()
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self.error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.close()

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self.thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)


# -- the controller side (the hub calls these) --------------------------------------------

def start_scheduler(host: str | None, port: int = 0, scheduler_args: dict[str, Any] | None = None) -> ServerThread:
    distributed = _distributed()
    args = {"dashboard": False, **(scheduler_args or {})}

    async def make() -> Any:
        return await distributed.Scheduler(host=host, port=port, **args)

    server = ServerThread(make)
    server.start()
    return server


def scheduler_info(server: ServerThread) -> dict[str, Any]:
    s = server.server
    return {"address": s.address, "ip": s.ip, "port": s.port}


# -- the engine side (run through apply) -----------------------------------------------------

_workers: dict[str, ServerThread] = {}  # this engine's dask worker, by scheduler address


def start_worker(address: str, nanny: bool = False, worker_args: dict[str, Any] | None = None) -> str:
    """On an engine: a dask worker (or nanny) for the scheduler at ``address``; its address."""
    distributed = _distributed()
    running = _workers.get(address)
    if running is not None and running.thread.is_alive():
        return running.server.address
    cls = distributed.Nanny if nanny else distributed.Worker
    args = {"host": _local_ip_towards(address), **(worker_args or {})}

    async def make() -> Any:
        return await cls(address, **args)

    server = ServerThread(make)
    server.start()
    _workers[address] = server
    return server.server.address


def _local_ip_towards(address: str) -> str:
    """This host's address on the interface that reaches ``address`` (tcp://host:port): where
    the worker listens, so that the scheduler and the other workers can reach it."""
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # no packet is sent
        probe.connect((host, int(port)))
        return probe.getsockname()[0]


def stop_worker() -> int:
    """On an engine: stop its dask workers; how many were running."""
    stopped = 0
    while _workers:
        _address, server = _workers.popitem()
        server.stop()
        stopped += 1
    return stopped


# -- the client side ---------------------------------------------------------------------------

def become_dask(client: Any, targets: Any = "all", port: int = 0, nanny: bool = False,
                scheduler_args: dict[str, Any] | None = None, **worker_args: Any) -> Any:
    distributed = _distributed()
    reply = client._request("become_dask_request", {"port": port, "scheduler_args": scheduler_args or {}})
    if reply.msg_type == "error_reply":
        raise RuntimeError(f"the controller could not start a dask scheduler: {reply.meta.get('evalue')}")
    address = reply.meta["address"]
    view = client.direct_view(targets)
    view.apply_sync(start_worker, address, nanny, worker_args)
    dask_client = distributed.Client(address)
    n = len(view._target_list(None)) if hasattr(view, "_target_list") else None
    if n:
        dask_client.wait_for_workers(n, timeout=START_TIMEOUT)
    return dask_client


def stop_dask(client: Any, targets: Any = "all") -> None:
    client.direct_view(targets).apply_sync(stop_worker)
    reply = client._request("stop_distributed_request", {})
    if reply.msg_type == "error_reply":
        raise RuntimeError(f"the controller could not stop its dask scheduler: {reply.meta.get('evalue')}")
