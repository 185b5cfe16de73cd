"""Showing what engines printed and displayed: prefixes, live streaming, grouping.

Used by ``AsyncResult.display_outputs`` / ``stream_output`` and the ``%px``
magics. Text goes to ``sys.stdout`` / ``sys.stderr`` with a ``[stdout:N]`` /
``[stderr:N]`` prefix at the start of each line; rich outputs are labelled
``[output:N]`` and shown with IPython's ``display`` when IPython runs (so a
notebook renders HTML and images), else as their ``text/plain`` form.

Live output reaches the client's I/O thread. That thread never prints: in
a notebook its output would land in the cell that created the Client. It
queues what arrives; the waiting thread (or a pump thread started in the
current cell) prints it.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

_LINE_END = re.compile(r"(?<=[\n\r])")


def _ipython_shell() -> Any:
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


class OutputPrinter:
    """Writes engine output with prefixes, never mixing two engines on one line."""

    def __init__(self) -> None:
        self._last: tuple[Any, str] | None = None
        self._midline = False

    def _stream(self, name: str) -> Any:
        return sys.stderr if name == "stderr" else sys.stdout

    def end_line(self) -> None:
        """Finish a line left open (output that did not end with a newline)."""
        if self._midline and self._last is not None:
            stream = self._stream(self._last[1])
            stream.write("\n")
            stream.flush()
        self._midline = False

    def stream(self, engine_id: Any, name: str, text: str) -> None:
        if not text:
            return
        key = (engine_id, name)
        stream = self._stream(name)
        for piece in _LINE_END.split(text):
            if not piece:
                continue
            if self._midline and self._last != key:
                self.end_line()
            if not self._midline:
                stream.write(f"[{name}:{engine_id}] ")
            stream.write(piece)
            self._last = key
            # A carriage return (a progress bar) restarts the line: prefix again.
            self._midline = not piece.endswith(("\n", "\r"))
        stream.flush()

    def display(self, engine_id: Any, output: dict[str, Any]) -> None:
        self.end_line()
        data = output.get("data") or {}
        shell = _ipython_shell()
        print(f"[output:{engine_id}]", flush=True)
        if shell is not None:
            from IPython.display import display

            display(data, raw=True, metadata=output.get("metadata") or {})
        else:
            print(data.get("text/plain", ""), flush=True)

    def result(self, engine_id: Any, count: Any, data: dict[str, Any] | None) -> None:
        if not data:
            return
        self.end_line()
        label = f"Out[{engine_id}:{count}]:" if count is not None else f"Out[{engine_id}]:"
        shell = _ipython_shell()
        if shell is not None and set(data) - {"text/plain"}:
            print(label, flush=True)
            from IPython.display import display

            display(data, raw=True)
        else:
            text = data.get("text/plain", "")
            sep = "\n" if "\n" in text else " "
            print(f"{label}{sep}{text}", flush=True)

    def error(self, err: BaseException) -> None:
        self.end_line()
        render = getattr(err, "_render_traceback_", None)
        lines = render() if render else [repr(err)]
        print("\n".join(lines), flush=True)


def _mds(client: Client, msg_ids: list[str]) -> list[Any]:
    return [client.metadata[m] for m in msg_ids if m in client.metadata]


def display_outputs(client: Client, msg_ids: list[str], groupby: str = "type", result_only: bool = False,
                    printer: OutputPrinter | None = None) -> None:
    """Show stdout, stderr, rich outputs and results of finished messages.

    ``groupby``: ``type`` (all stdout, then all stderr, then outputs, then
    results), ``engine`` (everything of one engine together) or ``order``
    (like type, but the i-th output of every engine before the (i+1)-th).
    """
    if groupby not in ("type", "engine", "order"):
        raise ValueError(f"groupby must be 'type', 'engine' or 'order', not {groupby!r}")
    p = printer or OutputPrinter()
    mds = _mds(client, msg_ids)

    def text(md: Any, name: str) -> None:
        if md[name]:
            p.stream(md["engine_id"], name, md[name])
            p.end_line()

    def outputs(md: Any) -> None:
        for out in md["outputs"] or []:
            p.display(md["engine_id"], out)

    def result(md: Any) -> None:
        p.result(md["engine_id"], md.get("execution_count"), (md["execute_result"] or {}).get("data"))

    if result_only:
        for md in mds:
            result(md)
        return
    if groupby == "engine":
        for md in mds:
            text(md, "stdout")
            text(md, "stderr")
            outputs(md)
            result(md)
        return
    for name in ("stdout", "stderr"):
        for md in mds:
            text(md, name)
    if groupby == "type":
        for md in mds:
            outputs(md)
    else:
        rounds = max((len(md["outputs"] or []) for md in mds), default=0)
        for i in range(rounds):
            for md in mds:
                if i < len(md["outputs"] or []):
                    p.display(md["engine_id"], md["outputs"][i])
    for md in mds:
        result(md)


class OutputStreamer:
    """Live output of some messages, printed by whoever calls :meth:`drain`.

    Every message's text is printed exactly once: what arrives live, then,
    when it finishes (:meth:`finish`), whatever the final reply adds.
    """

    def __init__(self, client: Client, msg_ids: list[str], printer: OutputPrinter | None = None) -> None:
        self.client = client
        self.msg_ids = list(msg_ids)
        self._ids = set(self.msg_ids)
        self.printer = printer or OutputPrinter()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._text_done: dict[tuple[str, str], int] = {}
        self._outputs_done: dict[str, int] = {}
        self._finished: set[str] = set()
        self._started = False

    # -- the client's I/O thread -------------------------------------------------------------

    def _on_stream(self, msg_id: str, engine_id: Any, name: str, text: str) -> None:
        if msg_id in self._ids:
            md = self.client.metadata.get(msg_id)
            end = len(md[name]) if md is not None else len(text)
            self._queue.put(("stream", msg_id, engine_id, name, text, end))

    def _on_display(self, msg_id: str, engine_id: Any, output: dict[str, Any], index: int) -> None:
        if msg_id in self._ids:
            self._queue.put(("display", msg_id, engine_id, output, index))

    # -- the printing thread -------------------------------------------------------------------

    def start(self) -> OutputStreamer:
        if not self._started:
            self._started = True
            self.client._stream_callbacks.append(self._on_stream)
            self.client._display_callbacks.append(self._on_display)
            for mid in self.msg_ids:  # what came before we listened
                self._queue.put(("catchup", mid))
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            for lst, cb in ((self.client._stream_callbacks, self._on_stream),
                            (self.client._display_callbacks, self._on_display)):
                try:
                    lst.remove(cb)
                except ValueError:
                    pass

    def drain(self, timeout: float = 0.0) -> int:
        """Print what is queued; wait up to ``timeout`` s for the first item. Returns the count."""
        n = 0
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return 0
        while True:
            self._handle(item)
            n += 1
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return n

    def _engine(self, msg_id: str) -> Any:
        md = self.client.metadata.get(msg_id)
        return md["engine_id"] if md is not None else "?"

    def _handle(self, item: tuple) -> None:
        kind, msg_id = item[0], item[1]
        if kind == "stream":
            _, _, engine_id, name, text, end = item
            done = self._text_done.get((msg_id, name), 0)
            if end <= done:
                return
            start = end - len(text)
            if start < done:
                text = text[done - start:]
            self._text_done[(msg_id, name)] = end
            self.printer.stream(engine_id, name, text)
        elif kind == "display":
            _, _, engine_id, output, index = item
            if index < self._outputs_done.get(msg_id, 0):
                return
            self._outputs_done[msg_id] = index + 1
            self.printer.display(engine_id, output)
        elif kind == "catchup":
            self._catch_up(msg_id)

    def _catch_up(self, msg_id: str) -> None:
        md = self.client.metadata.get(msg_id)
        if md is None:
            return
        eid = md["engine_id"]
        for name in ("stdout", "stderr"):
            full = md[name] or ""
            done = self._text_done.get((msg_id, name), 0)
            if len(full) > done:
                self._text_done[(msg_id, name)] = len(full)
                self.printer.stream(eid, name, full[done:])
        outputs = md["outputs"] or []
        for i in range(self._outputs_done.get(msg_id, 0), len(outputs)):
            self.printer.display(eid, outputs[i])
        self._outputs_done[msg_id] = len(outputs)

    def finish(self, msg_id: str) -> None:
        """Print what the final reply of a finished message added (once)."""
        self.drain()
        if msg_id not in self._finished and msg_id not in self.client.outstanding:
            self._finished.add(msg_id)
            self._catch_up(msg_id)

    def finish_all(self) -> None:
        for mid in self.msg_ids:
            self.finish(mid)
        self.printer.end_line()


class StreamPump:
    """``AsyncResult.stream_output()``: a thread, started in the caller's
    context (so a notebook routes its output to the current cell), prints
    live output until the block ends."""

    def __init__(self, client: Client, msg_ids: list[str]) -> None:
        self.streamer = OutputStreamer(client, msg_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpcpar-stream-output", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.streamer.drain(timeout=0.05)

    def __enter__(self) -> StreamPump:
        self.streamer.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.streamer.stop()
        for mid in self.streamer.msg_ids:
            if mid not in self.streamer.client.outstanding:
                self.streamer.finish(mid)
            else:
                self.streamer.drain()
        self.streamer.printer.end_line()
