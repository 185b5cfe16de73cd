"""SSH: a laptop client through one tunnel, and engines started on remote hosts.

``tunnel`` opens the client's single forwarded port, ``remote`` reads a remote
profile's connection file, ``session`` wraps OpenSSH (default) or paramiko.
"""

from .errors import ControllerNotRunning, RemoteNotFound, SSHAuthError, SSHError, UnknownHostKey
from .target import SSHOptions, SSHTarget

__all__ = [
    "ControllerNotRunning",
    "RemoteNotFound",
    "SSHAuthError",
    "SSHError",
    "SSHOptions",
    "SSHTarget",
    "UnknownHostKey",
]
