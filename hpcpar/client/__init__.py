"""The client side: Client, views and AsyncResult."""

from .asyncresult import AsyncMapResult, AsyncResult, Metadata
from .client import Client, ConnectionRejected
from .view import DirectView, LoadBalancedView, View, ViewExecutor

__all__ = [
    "AsyncMapResult",
    "AsyncResult",
    "Client",
    "ConnectionRejected",
    "DirectView",
    "LoadBalancedView",
    "Metadata",
    "View",
    "ViewExecutor",
]
