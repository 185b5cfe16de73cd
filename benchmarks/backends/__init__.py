"""Backend adapters: one module per system, all exposing :class:`backends.base.Backend`."""

from __future__ import annotations

import importlib

from .base import Backend

BACKENDS: dict[str, str] = {
    "hpcpar": "backends.hpcpar_backend:HpcparBackend",
    "ipyparallel": "backends.ipyparallel_backend:IpyparallelBackend",
    "dask": "backends.dask_backend:DaskBackend",
}


def load_backend(name: str) -> Backend:
    """Import and instantiate the adapter called ``name``."""
    module_name, _, cls_name = BACKENDS[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls()
