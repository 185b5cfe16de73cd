"""AsyncMapResult: the results of a map, chunk by chunk, joined back in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .asyncresult import AsyncResult

if TYPE_CHECKING:
    from .client import Client


class AsyncMapResult(AsyncResult):
    """Results of a map: each message returns a list (a chunk); results are
    the chunks joined back in order. ``len()`` and ``progress`` count items."""

    def __init__(
        self,
        client: Client,
        msg_ids: list[str],
        fname: str = "map",
        ordered: bool = True,
        joiner: Callable[[list[Any]], Any] | None = None,
        n_items: int | None = None,
        return_exceptions: bool = False,
        chunk_sizes: list[int] | None = None,
    ) -> None:
        super().__init__(client, msg_ids, fname=fname, single=False, return_exceptions=return_exceptions)
        self.ordered = ordered
        self._joiner = joiner
        self._n_items = n_items
        if chunk_sizes is not None and len(chunk_sizes) != len(self.msg_ids):
            raise ValueError(f"{len(chunk_sizes)} chunk sizes for {len(self.msg_ids)} messages")
        self._chunk_sizes = dict(zip(self.msg_ids, chunk_sizes)) if chunk_sizes is not None else None

    def _reconstruct(self, results: list[Any]) -> Any:
        if self._joiner is not None:
            return self._joiner(results)
        out: list[Any] = []
        for chunk in results:
            out.extend(chunk)
        return out

    def _reconstruct_with_errors(self, results: list[Any]) -> Any:
        """A failed chunk appears as its one exception, in its place (as in ipyparallel)."""
        if not any(isinstance(r, BaseException) for r in results):
            return self._reconstruct(results)
        out: list[Any] = []
        for chunk in results:
            if isinstance(chunk, BaseException):
                out.append(chunk)
            else:
                out.extend(chunk)
        return out

    def __len__(self) -> int:
        return self._n_items if self._n_items is not None else len(self.msg_ids)

    @property
    def progress(self) -> int:
        """Items done so far, out of ``len(self)``."""
        done = len(self.msg_ids) - len(self._remaining)
        if done == len(self.msg_ids):
            return len(self)
        if self._chunk_sizes is not None:
            remaining = self._remaining
            return sum(n for m, n in self._chunk_sizes.items() if m not in remaining)
        if self._n_items is None or not self.msg_ids:
            return done
        return done * len(self) // len(self.msg_ids)  # chunk sizes unknown: even chunks

    def _like(self, msg_ids: list[str], single: bool, sizes: dict[str, int] | None = None) -> AsyncResult:
        table = {**(self._chunk_sizes or {}), **(sizes or {})}
        known = all(m in table for m in msg_ids)
        sizes_list = [table[m] for m in msg_ids] if known else None
        n_items = sum(sizes_list) if sizes_list is not None else None
        return AsyncMapResult(self._client, msg_ids, fname=self._fname, ordered=self.ordered, joiner=self._joiner,
                              n_items=n_items, return_exceptions=self._return_exceptions,
                              chunk_sizes=sizes_list)._attach()

    def _part(self, msg_id: str) -> AsyncResult:
        """split()'s part for one message, as ipyparallel 9 makes it: a plain AsyncResult over
        that message, whose ``get()`` is ``[chunk]``; ``AsyncMapResult.join`` of the parts gives
        the map back (``_map_parent``)."""
        part = AsyncResult(self._client, [msg_id], fname=self._fname, single=False,
                           return_exceptions=self._return_exceptions)._attach()
        part._map_parent = self  # type: ignore[attr-defined]
        if self._chunk_sizes and msg_id in self._chunk_sizes:
            part._chunk_sizes = {msg_id: self._chunk_sizes[msg_id]}  # type: ignore[attr-defined]
        return part

    def _items(self, msg_id: str) -> list[Any]:
        """One chunk's items; a failed chunk (with return_exceptions) is its one exception."""
        value = self._one(msg_id)
        return [value] if isinstance(value, BaseException) else value

    def __iter__(self) -> Iterator[Any]:
        if self.ordered:
            for msg_id in self.msg_ids:
                yield from self._items(msg_id)
            return
        pending = list(self.msg_ids)
        while pending:
            done = self._client._wait_any(pending)
            for msg_id in done:
                pending.remove(msg_id)
                yield from self._items(msg_id)
