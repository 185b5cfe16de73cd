"""ipyparallel's low-level sending methods, public on its Client: ``send_apply_request`` and
``send_execute_request``.

ipyparallel's views call them with one of the client's sockets (``rc._mux_socket`` for one
engine, ``rc._task_socket`` for the load balancer, or ``view._socket``) and an engine
``ident``; code written against them runs here with the same arguments. hpcpar has one
connection to the controller, so the "socket" only names the route. The result is the
message's future: a single AsyncResult with ``msg_id`` (ipyparallel's MessageFuture).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .asyncresult import AsyncResult
from .dependency import dependency_spec

if TYPE_CHECKING:
    from .client import Client


class Route:
    """Stands for one of ipyparallel's client sockets (``rc._mux_socket`` ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<hpcpar route {self.name!r}>"


MUX, TASK, BROADCAST = Route("direct"), Route("lb"), Route("broadcast")


def _engine_of(client: Client, ident: Any) -> int:
    """An engine id from ipyparallel's ident: the engine's uuid (str/bytes), its id, a list
    (the last element is the engine, as ipyparallel routes), or an engine record."""
    if isinstance(ident, (list, tuple)) and ident:
        ident = ident[-1]
    if isinstance(ident, dict):
        ident = ident.get("id", ident.get("uuid"))
    if isinstance(ident, bytes):
        ident = ident.decode()
    engines = client._engines
    if isinstance(ident, int) and not isinstance(ident, bool) and ident in engines:
        return ident
    for eid, eng in list(engines.items()):
        if ident is not None and str(eng.get("uuid", "")) == str(ident):
            return eid
    raise IndexError(f"ident {ident!r} names no registered engine (give an engine id from rc.ids, or its "
                     f"uuid); registered ids: {sorted(engines)}")


class LowLevelSend:
    """Mixed into Client: ipyparallel's ``send_apply_request`` / ``send_execute_request``."""

    _mux_socket = MUX
    _task_socket = TASK
    _broadcast_socket = BROADCAST

    def _route(self: Client, socket: Any) -> str:
        if isinstance(socket, Route):
            return socket.name
        sock = getattr(socket, "_socket", None)  # a view given in place of its socket
        if isinstance(sock, Route):
            return sock.name
        raise TypeError(f"socket must be one of the client's (rc._mux_socket, rc._task_socket, "
                        f"rc._broadcast_socket) or a view's _socket, not {socket!r}")

    def send_apply_request(self: Client, socket: Any, f: Any, args: Any = None, kwargs: Any = None,
                           metadata: Any = None, track: bool = False, ident: Any = None,
                           message_future_hook: Any = None) -> AsyncResult:
        """Send ``f(*args, **kwargs)``: to the engine ``ident`` names (direct and broadcast
        sockets) or to the load balancer (``metadata`` may carry ``targets``, ``after``,
        ``follow``, ``timeout``, ``retries``, ``label``). Returns the message's future."""
        from .view import _fname, check_callable

        args = [] if args is None else args
        kwargs = {} if kwargs is None else kwargs
        metadata = {} if metadata is None else metadata
        check_callable(f)
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"args must be tuple or list, not {type(args).__name__}")
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be dict, not {type(kwargs).__name__}")
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be dict, not {type(metadata).__name__}")
        route = self._route(socket)
        obj = (f, tuple(args), dict(kwargs))
        extra: dict[str, Any] = {"label": metadata.get("label")}
        if route == "lb":
            if metadata.get("targets"):
                extra["lb_targets"] = [_engine_of(self, t) for t in metadata["targets"]]
            for key in ("after", "follow"):
                spec = dependency_spec(metadata.get(key))
                if spec:
                    extra[key] = spec
            for key in ("timeout", "retries"):
                if metadata.get(key):
                    extra[key] = metadata[key]
            msg_ids, frames, header = self._submit("apply_request", route="lb", obj=obj, header_extra=extra)
            targets = None
        else:
            targets = [_engine_of(self, ident)]
            msg_ids, frames, header = self._submit("apply_request", route="direct", targets=targets, obj=obj,
                                                   header_extra=extra)
        return self._send_one(msg_ids, frames, header, _fname(f), targets, message_future_hook)

    def send_execute_request(self: Client, socket: Any, code: str, silent: bool = True, metadata: Any = None,
                             ident: Any = None, message_future_hook: Any = None) -> AsyncResult:
        """Run ``code`` on the engine ``ident`` names. Returns the message's future."""
        metadata = {} if metadata is None else metadata
        if not isinstance(code, str):
            raise TypeError(f"code must be text, not {type(code).__name__}")
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be dict, not {type(metadata).__name__}")
        if self._route(socket) == "lb":
            raise ValueError("execute requests go to one engine: use rc._mux_socket with ident=<engine>, "
                             "as ipyparallel's DirectView.execute does")
        targets = [_engine_of(self, ident)]
        msg_ids, frames, header = self._submit("execute_request", route="direct", targets=targets,
                                               meta={"code": code, "silent": bool(silent)},
                                               header_extra={"label": metadata.get("label")})
        ar = self._send_one(msg_ids, frames, header, "execute", targets, message_future_hook)
        for md in ar._metadata_list():
            md["execute_input"] = code
        return ar

    def _send_one(self: Client, msg_ids: list[str], frames: list[Any], header: dict[str, Any], fname: str,
                  targets: list[int] | None, hook: Any) -> AsyncResult:
        ar = AsyncResult(self, msg_ids, fname=fname, targets=targets, single=True)
        ar.msg_id = msg_ids[0]  # type: ignore[attr-defined]  # as ipyparallel's MessageFuture
        ar.header = header  # type: ignore[attr-defined]
        if hook is not None:
            hook(ar)
        self._send_tracked(msg_ids, frames, header, ar, targets)
        return ar
