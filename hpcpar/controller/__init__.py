"""The controller: one process that registers engines, routes requests and records tasks."""

from .app import Controller, ControllerConfig

__all__ = ["Controller", "ControllerConfig"]
