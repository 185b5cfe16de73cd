"""Where a profile keeps its files: ``$HPCPAR_DIR/profile_<name>/{security,log,run}``.

Several clusters run side by side because everything a cluster writes lives
under its profile directory, keyed by cluster id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROFILE = "default"
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def hpcpar_dir() -> Path:
    """Root of all profiles: ``$HPCPAR_DIR`` or ``~/.hpcpar``."""
    root = os.environ.get("HPCPAR_DIR")
    return Path(root).expanduser() if root else Path.home() / ".hpcpar"


def check_profile_name(name: str) -> str:
    if not _PROFILE_NAME.match(name or ""):
        raise ValueError(
            f"invalid profile name {name!r}: use letters, digits, '.', '_' or '-' "
            "(for example --profile pbs)"
        )
    return name


@dataclass(frozen=True)
class ProfileDir:
    """A profile directory and the conventional file names inside it."""

    path: Path

    @classmethod
    def for_profile(cls, profile: str | None = None, create: bool = False) -> ProfileDir:
        name = check_profile_name(profile or DEFAULT_PROFILE)
        pd = cls(hpcpar_dir() / f"profile_{name}")
        if create:
            pd.create()
        return pd

    @property
    def name(self) -> str:
        base = self.path.name
        return base[len("profile_") :] if base.startswith("profile_") else base

    @property
    def security(self) -> Path:
        return self.path / "security"

    @property
    def log(self) -> Path:
        return self.path / "log"

    @property
    def run(self) -> Path:
        return self.path / "run"

    def create(self) -> ProfileDir:
        """Private (0700) all the way: logs, the task database and the run state name tasks and
        hold signed requests, which are nobody else's business."""
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        for sub in (self.security, self.log, self.run):
            sub.mkdir(exist_ok=True)
            os.chmod(sub, 0o700)
        return self

    @staticmethod
    def _suffix(cluster_id: str) -> str:
        return f"-{cluster_id}" if cluster_id else ""

    def client_file(self, cluster_id: str = "") -> Path:
        return self.security / f"hpcpar{self._suffix(cluster_id)}-client.json"

    def engine_file(self, cluster_id: str = "") -> Path:
        return self.security / f"hpcpar{self._suffix(cluster_id)}-engine.json"

    def controller_key_file(self, cluster_id: str = "") -> Path:
        """The controller's Curve key pair (curve mode), kept for --restore; never given to peers."""
        return self.security / f"hpcpar{self._suffix(cluster_id)}-controller-keys.json"

    def state_file(self, cluster_id: str = "") -> Path:
        return self.run / f"cluster{self._suffix(cluster_id)}.json"

    def log_file(self, role: str, cluster_id: str = "") -> Path:
        return self.log / f"{role}{self._suffix(cluster_id)}.log"


def all_profiles() -> list[ProfileDir]:
    root = hpcpar_dir()
    if not root.is_dir():
        return []
    return [ProfileDir(p) for p in sorted(root.glob("profile_*")) if p.is_dir()]


def private_file(path: str | os.PathLike, append: bool = True) -> int:
    """Open (create) ``path`` for writing, mode 0600 whatever the umask: a file descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd
