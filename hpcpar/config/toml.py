"""TOML reading: the standard library's tomllib (3.11+), or tomli on 3.10 when installed."""

from __future__ import annotations

from typing import Any, BinaryIO

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]


class TOMLDecodeError(ValueError):
    """A TOML file or value that does not parse."""


def _module() -> Any:
    if _toml is None:
        raise RuntimeError("reading hpcpar configuration needs Python 3.11+, or `pip install tomli` on 3.10")
    return _toml


def loads(text: str) -> dict[str, Any]:
    toml = _module()
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise TOMLDecodeError(str(e)) from None


def load(f: BinaryIO) -> dict[str, Any]:
    return loads(f.read().decode("utf-8"))
