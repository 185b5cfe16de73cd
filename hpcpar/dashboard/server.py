"""The dashboard's web server: one page, its static files, and a server-sent event stream.

Tornado (the ``dashboard`` extra; a single pure-Python package that every Jupyter
install already has) serves on 127.0.0.1 only. The URL carries a random token,
kept in a cookie after the first visit, so other users of a shared machine cannot
read the page; requests naming another Host are refused (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shlex
import threading
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

try:
    import tornado.netutil
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.iostream import StreamClosedError
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the dashboard needs tornado: pip install 'hpcpar[dashboard]' (or pip install tornado)"
    ) from e

from .model import DashboardState

log = logging.getLogger("hpcpar.dashboard")
STATIC = Path(__file__).parent  # index.html, dashboard.js and dashboard.css sit beside this module
COOKIE = "hpcpar_dashboard"
QUEUE_LIMIT = 64  # updates a slow browser may lag behind before it is made to reconnect


class _Base(tornado.web.RequestHandler):
    server: DashboardServer

    def initialize(self, server: DashboardServer) -> None:
        self.server = server

    def prepare(self) -> None:
        host = (self.request.host or "").lower()
        if host not in self.server.allowed_hosts:
            raise tornado.web.HTTPError(403, reason="unknown Host")
        token = self.get_argument("token", None) or self.get_cookie(COOKIE)
        if not token or not secrets.compare_digest(token, self.server.token):
            raise tornado.web.HTTPError(403, reason="missing or wrong token: open the URL hpcpar printed")

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}\n")


class PageHandler(_Base):
    def get(self) -> None:
        if self.get_argument("token", None):
            self.set_cookie(COOKIE, self.server.token, httponly=True, samesite="Strict")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write((STATIC / "index.html").read_bytes())


class StaticHandler(_Base):
    TYPES = {".js": "text/javascript", ".css": "text/css"}

    def get(self, name: str) -> None:
        path = STATIC / name
        if "/" in name or not name.startswith("dashboard.") or path.suffix not in self.TYPES or not path.is_file():
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", self.TYPES[path.suffix] + "; charset=utf-8")
        self.write(path.read_bytes())


class StateHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(self.server.state.snapshot()))


class EventsHandler(_Base):
    """Server-sent events: a snapshot, then every update (browsers drop those older
    than the snapshot by ``seq``)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)
        self.server.subscribers.add(queue)
        try:
            self.write(f"retry: 2000\ndata: {json.dumps(self.server.state.snapshot())}\n\n")
            await self.flush()
            while True:
                msg = await queue.get()
                if msg is None:
                    break
                self.write(f"data: {msg}\n\n")
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.server.subscribers.discard(queue)


class DashboardServer:
    """The HTTP side; ``publish`` may be called from any thread."""

    def __init__(self, state: DashboardState, port: int = 8787, token: str | None = None) -> None:
        self.state = state
        self.port = port
        self.token = token or secrets.token_hex(16)
        self.subscribers: set[asyncio.Queue] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._http: HTTPServer | None = None
        self.allowed_hosts: set[str] = set()

    def app(self) -> tornado.web.Application:
        args = {"server": self}
        return tornado.web.Application([
            (r"/", PageHandler, args),
            (r"/static/([^/]+)", StaticHandler, args),
            (r"/state\.json", StateHandler, args),
            (r"/events", EventsHandler, args),
        ])

    def listen(self) -> None:
        """Bind 127.0.0.1:port (0: any free port) on the running event loop."""
        self.loop = asyncio.get_running_loop()
        self._http = HTTPServer(self.app(), xheaders=False)
        try:
            sockets = tornado.netutil.bind_sockets(self.port, address="127.0.0.1")
        except OSError as e:
            raise OSError(f"cannot serve the dashboard on 127.0.0.1:{self.port} ({e.strerror}); "
                          "pick another port with --port (0: any free port)") from None
        self.port = sockets[0].getsockname()[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self._http.add_sockets(sockets)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def publish(self, update: dict[str, Any]) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        text = json.dumps(update)
        try:
            self.loop.call_soon_threadsafe(self._broadcast, text)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _broadcast(self, text: str | None) -> None:
        for q in list(self.subscribers):
            try:
                q.put_nowait(text)
            except asyncio.QueueFull:
                # A browser that cannot keep up starts over from a snapshot (EventSource reconnects).
                self.subscribers.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    async def close(self) -> None:
        self._broadcast(None)
        if self._http is not None:
            self._http.stop()
            await self._http.close_all_connections()


class DashboardHandle(str):
    """The dashboard's URL (a str), with ``stop()``; in Jupyter it shows the page in an IFrame."""

    _stopper: Any

    def __new__(cls, url: str, stopper: Any) -> DashboardHandle:
        self = super().__new__(cls, url)
        self._stopper = stopper
        return self

    @property
    def url(self) -> str:
        return str(self)

    def stop(self) -> None:
        """Stop serving and polling (also done at interpreter exit)."""
        self._stopper()

    def _repr_html_(self) -> str:
        import html

        u = html.escape(str(self), quote=True)
        return (f'<p><a href="{u}" target="_blank">{u}</a></p>'
                f'<iframe src="{u}" width="100%" height="720" style="border:1px solid #ccc"></iframe>')


class Dashboard:
    """A collector plus a server: ``run()`` blocks (the CLI), ``start()`` uses a thread."""

    def __init__(self, client: Any, *, port: int = 8787, interval: float = 0.5, window: float = 300.0,
                 jobs: Any = None, title: str = "", own_client: bool = False,
                 state: DashboardState | None = None) -> None:
        from .collector import Collector

        self.client = client
        self.own_client = own_client
        self.state = state or DashboardState(window=window, title=title)
        self.server = DashboardServer(self.state, port=port)
        # Without a client nothing polls: the caller feeds ``state`` and ``server.publish``.
        self.collector = (Collector(client, self.state, self.server.publish, interval=interval, jobs=jobs)
                          if client is not None else None)
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            self.server.listen()
        except BaseException as e:
            self._error = e
            self._ready.set()
            raise
        if self.collector is not None:
            self.collector.start()
        self._ready.set()
        await self._stopped.wait()
        await self.server.close()

    def run(self, on_ready: Any = None) -> None:
        """Serve until ``stop()`` or Ctrl-C, in this thread."""
        async def main() -> None:
            task = asyncio.ensure_future(self._main())
            await asyncio.get_running_loop().run_in_executor(None, self._ready.wait)
            if self._error is None and on_ready is not None:
                on_ready(self.server.url)
            await task

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass
        finally:
            self._shutdown()

    def start(self, timeout: float = 30.0) -> DashboardHandle:
        def serve() -> None:
            try:
                asyncio.run(self._main())
            except BaseException:  # noqa: BLE001 - kept in _error, raised by start() in the caller
                if self._error is None:
                    raise

        self._thread = threading.Thread(target=serve, name="hpcpar-dashboard", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the dashboard server did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        import atexit

        atexit.register(self.stop)
        return DashboardHandle(self.server.url, self.stop)

    def stop(self) -> None:
        loop = self.server.loop
        if loop is not None and self._stopped is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._shutdown()

    def _shutdown(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self.own_client:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass


def start_dashboard(client: Any = None, *, port: int = 0, interval: float = 0.5, window: float = 300.0,
                    jobs: Any = None, remote_python: str | None = None, **client_kwargs: Any) -> DashboardHandle:
    """Serve the dashboard from a background thread of this process and return its URL.

    ``client``: a connected Client; the dashboard opens a connection of its own from the
    same connection info (through the same SSH tunnel when there is one), so it never
    shares sockets with your session. Without one, ``client_kwargs`` go to ``Client()``.
    """
    from ..client import Client

    if client is None:
        client = own = Client(**client_kwargs)
    else:
        own = Client(asdict(client._info), timeout=client.timeout)
    try:
        if jobs is None:
            jobs = jobs_for(client, remote_python)
        info = own._info
        title = info.profile + (f" ({info.cluster_id})" if info.cluster_id else "")
        dash = Dashboard(own, port=port, interval=interval, window=window, jobs=jobs, title=title, own_client=True)
        return dash.start()
    except BaseException:
        own.close()
        raise


def jobs_for(client: Any, remote_python: str | None = None) -> Any:
    """The jobs reader for ``client``'s cluster: over the client's SSH session when it came
    through a tunnel, from the profile directory when that is on this machine, else None."""
    from .jobs import LocalJobs, RemoteJobs

    info = client._info
    tunnel = getattr(client, "_tunnel", None)
    if tunnel is not None:
        remote_file = (info.extra or {}).get("tunnel", {}).get("remote_file")
        if not remote_file:
            return None
        profile_dir = str(PurePosixPath(remote_file).parent.parent)
        return RemoteJobs(tunnel.session, remote_python or "python3", shlex.quote(profile_dir), info.cluster_id)
    source = str(getattr(client, "_source", "") or "")
    path = Path(source) if source.endswith(".json") else None
    if path is not None and path.parent.name == "security" and path.exists():
        return LocalJobs(path.parent.parent, info.cluster_id)
    return None
