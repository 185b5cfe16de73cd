"""What ``execute()`` returns per engine: an :class:`ExecuteReply`.

As in ipyparallel, ``view.execute(code).get()`` gives one ExecuteReply per
engine (the bare reply for a single int target): the cell's
``execution_count``, its value as ``execute_result`` (``{"data": {mime: ...},
"metadata": {...}}``), and every metadata key (``stdout``, ``stderr``,
``outputs``, ``engine_id``...) as an attribute or item. In IPython it shows
as ``Out[engine:count]: value``, with the value's rich forms (HTML, images...)
where the frontend can show them.
"""

from __future__ import annotations

from typing import Any

_SHORT = 32  # characters of the value in repr()


class ExecuteReply:
    """The outcome of one ``execute`` on one engine."""

    def __init__(self, msg_id: str, metadata: Any) -> None:
        self.msg_id = msg_id
        self.metadata = metadata

    @property
    def execution_count(self) -> int | None:
        return self.metadata.get("execution_count")

    @property
    def execute_result(self) -> dict[str, Any] | None:
        return self.metadata.get("execute_result")

    @property
    def data(self) -> dict[str, Any]:
        """The MIME bundle of the cell's value ({} when it had none)."""
        return dict((self.execute_result or {}).get("data") or {})

    @property
    def _result_metadata(self) -> dict[str, Any]:
        return dict((self.execute_result or {}).get("metadata") or {})

    def __getitem__(self, key: str) -> Any:
        return self.metadata[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "metadata":
            raise AttributeError(key)
        try:
            return self.metadata[key]
        except KeyError:
            raise AttributeError(f"ExecuteReply has no attribute or metadata key {key!r}") from None

    def __repr__(self) -> str:
        text = self.data.get("text/plain", "")
        if len(text) > _SHORT:
            text = text[: _SHORT - 3] + "..."
        return f"<ExecuteReply[{self.execution_count}]: {text}>"

    def _plaintext(self) -> str:
        text = self.data.get("text/plain", "")
        if not text:
            return ""
        if "\n" in text and not text.startswith("\n"):
            text = "\n" + text
        return f"Out[{self.metadata.get('engine_id')}:{self.execution_count}]: {text}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self._plaintext())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        data = self.data
        if "text/plain" in data:
            data["text/plain"] = self._plaintext()
        return data, self._result_metadata

    def _repr_mime_(self, mime: str) -> Any:
        data = self.data
        if mime not in data:
            return None
        md = self._result_metadata
        return (data[mime], md[mime]) if mime in md else data[mime]

    def _repr_html_(self) -> Any:
        return self._repr_mime_("text/html")

    def _repr_markdown_(self) -> Any:
        return self._repr_mime_("text/markdown")

    def _repr_latex_(self) -> Any:
        return self._repr_mime_("text/latex")

    def _repr_json_(self) -> Any:
        return self._repr_mime_("application/json")

    def _repr_javascript_(self) -> Any:
        return self._repr_mime_("application/javascript")

    def _repr_png_(self) -> Any:
        return self._repr_mime_("image/png")

    def _repr_jpeg_(self) -> Any:
        return self._repr_mime_("image/jpeg")

    def _repr_svg_(self) -> Any:
        return self._repr_mime_("image/svg+xml")

    def _repr_pdf_(self) -> Any:
        return self._repr_mime_("application/pdf")

    def display(self) -> None:
        """Show the cell's value with IPython's display (rich where the frontend can)."""
        from IPython.display import publish_display_data

        publish_display_data(self.data, self._result_metadata)
