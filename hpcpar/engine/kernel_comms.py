"""Jupyter comms on a bound engine kernel (``bind_kernel``): what ipywidgets needs.

A comm is a pair of objects, one in the frontend and one in the kernel, that
exchange ``comm_open`` / ``comm_msg`` / ``comm_close`` messages. Libraries
(ipywidgets, bqplot, plotly's FigureWidget...) create them through the
``comm`` package (``comm.create_comm``, ``comm.get_comm_manager``), which
expects the running kernel to plug in how messages are sent. Once an engine
serves a kernel, comms created on the engine publish on that kernel's IOPub
channel, and the frontend's messages reach their handlers through the
process-wide comm manager (where ipywidgets registered its targets when it
was imported, perhaps before the kernel was bound).

Without the ``comm`` package on the engine, comm messages are answered with a
clear error and nothing else changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import BoundKernel

COMM_MESSAGES = ("comm_open", "comm_msg", "comm_close")


def _comm_class(kernel: BoundKernel) -> type:
    from comm.base_comm import BaseComm

    class KernelComm(BaseComm):
        """A comm whose messages go out on the bound kernel's IOPub socket."""

        def publish_msg(self, msg_type: str, data: dict | None = None, metadata: dict | None = None,
                        buffers: list | None = None, **keys: Any) -> None:
            if kernel.stopping.is_set():
                return  # the console went away; nobody listens
            content = {"data": data or {}, "comm_id": self.comm_id, **keys}
            kernel._publish(msg_type, content, kernel.parent, metadata=metadata or {}, ident=self.topic,
                            buffers=buffers)

    return KernelComm


class Comms:
    """The comm side of one bound kernel: installs the comm factory, routes frontend messages."""

    def __init__(self, kernel: BoundKernel) -> None:
        self.kernel = kernel
        try:
            import comm
        except ImportError:
            self.manager = None
            return
        self._comm = comm
        self.manager = comm.get_comm_manager()  # the process's one: targets registered at import stay
        self._saved_create = comm.create_comm
        cls = _comm_class(kernel)
        comm.create_comm = lambda *args, **kwargs: cls(*args, **kwargs)

    def handle(self, msg: dict, idents: list) -> None:
        """A frontend's comm_open / comm_msg / comm_close (these have no reply)."""
        if self.manager is None:
            self.kernel._publish("stream", {"name": "stderr", "text": "this engine has no `comm` package: "
                                            "pip install comm (ipywidgets brings it) where the engines run\n"},
                                 msg)
            return
        getattr(self.manager, msg["header"]["msg_type"])(self.kernel.shell_sock, idents, msg)

    def info(self, target_name: str | None) -> dict:
        """comm_info_reply's ``comms``: the open comms, of one target if given."""
        if self.manager is None:
            return {}
        return {cid: {"target_name": c.target_name} for cid, c in list(self.manager.comms.items())
                if target_name is None or c.target_name == target_name}

    def close(self) -> None:
        """Unbinding: comms created from now on are the comm package's inert default ones."""
        if self.manager is None:
            return
        for c in list(self.manager.comms.values()):
            c._closed = True  # the frontend is gone; closing would publish on a closed socket
        self.manager.comms.clear()
        self._comm.create_comm = self._saved_create
