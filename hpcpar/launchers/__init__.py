"""Launchers start and stop the controller and engine sets on some system.

Built-in and third-party launchers register under the entry-point group
``hpcpar.launchers``; :func:`get_launcher_class` resolves a name such as
``"local"`` or ``"slurm"`` to its class.
"""

from .base import Launcher, LauncherError, get_launcher_class, launcher_names

__all__ = ["Launcher", "LauncherError", "get_launcher_class", "launcher_names"]
