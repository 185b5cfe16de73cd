"""``@view.remote`` and ``@view.parallel``: functions that run through a view when called."""

from __future__ import annotations

import functools
from typing import Any


class RemoteFunction:
    """Calling it applies the wrapped function through the view."""

    def __init__(self, view: Any, func: Any, block: bool | None = None, **flags: Any) -> None:
        self.view = view
        self.func = func
        self.block = block
        self.flags = flags
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        block = self.view.block if self.block is None else self.block
        with self.view.temp_flags(block=block, **self.flags):
            return self.view.apply(self.func, *args, **kwargs)


class ParallelFunction(RemoteFunction):
    """Calling it maps the wrapped function over its sequence arguments through the view."""

    def __init__(self, view: Any, func: Any, dist: str = "b", block: bool | None = None, **flags: Any) -> None:
        if dist != "b":
            raise ValueError("only dist='b' is supported")
        super().__init__(view, func, block=block, **flags)
        self.dist = dist

    def __call__(self, *sequences: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("a parallel function takes only sequences; bind other arguments with functools.partial")
        block = self.view.block if self.block is None else self.block
        return self.view.map(self.func, *sequences, block=block)

    def map(self, *sequences: Any) -> Any:
        return self(*sequences)


def remote(view: Any, block: bool | None = None, **flags: Any):
    def decorator(f: Any) -> RemoteFunction:
        return RemoteFunction(view, f, block=block, **flags)

    return decorator


def parallel(view: Any, dist: str = "b", block: bool | None = None, **flags: Any):
    def decorator(f: Any) -> ParallelFunction:
        return ParallelFunction(view, f, dist=dist, block=block, **flags)

    return decorator
