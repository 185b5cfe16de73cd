"""Large buffers through /dev/shm instead of through the controller.

When a client and its engines share a host, a large out-of-band buffer (a
numpy array) is written once to a fresh file in /dev/shm and the message
carries only a descriptor of it in its signed meta: ``meta["shm"]`` is a list
of ``[index, name, nbytes]``, ``index`` being the buffer's place among the
message's buffers. The receiver maps the file copy-on-write (MAP_PRIVATE), so
the arrays it unpickles are backed by the file's pages without a copy, stay
writable, and a change on one engine is seen by no one else.

Same-host detection is by a host key that differs whenever the file would
not be visible or readable on the other side: the boot id (another machine,
or a reboot), the uid (files are 0600) and the device and inode of /dev/shm
(another mount namespace or container with its own /dev/shm).

Names are ``hpcpar-<cluster>-<token>-<random>``: ``token`` is derived from
the cluster key, so every holder of the key (and ``hpcpar stop``, which reads
the connection file) knows the prefix and can remove leftovers, and a
descriptor naming anything else is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import re
import secrets
import stat
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from .error import KernelError

SHM_DIR = Path("/dev/shm")
# Buffers at least this large go through shared memory: the hub's store limit, so
# what the task database keeps does not change (larger results were never stored).
DEFAULT_THRESHOLD = 8 << 20
ENABLE_ENV = "HPCPAR_SHARED_MEMORY"  # "0" / "false" / "no" / "off" turns it off in this process
THRESHOLD_ENV = "HPCPAR_SHARED_MEMORY_THRESHOLD"  # bytes
HOST_KEY_ENV = "HPCPAR_TEST_HOST_KEY"  # for tests only: pretend to be on another host
_RANDOM_HEX = 32
_MAX_WRITE = 1 << 30


class SharedMemoryError(KernelError):
    """A shared-memory descriptor could not be used (missing file, forged name, wrong size)."""


def enabled_by_env() -> bool:
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def threshold() -> int:
    text = os.environ.get(THRESHOLD_ENV)
    if not text:
        return DEFAULT_THRESHOLD
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${THRESHOLD_ENV} must be a number of bytes, not {text!r}") from None
    return max(1, value)


@cache
def _real_host_key() -> str | None:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        st = os.stat(SHM_DIR)
    except OSError:
        return None  # no /proc or no /dev/shm (not Linux): no shared-memory path
    if not stat.S_ISDIR(st.st_mode) or not os.access(SHM_DIR, os.W_OK):
        return None
    text = f"{boot_id}:{os.getuid()}:{st.st_dev}:{st.st_ino}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def host_key() -> str | None:
    """This process's host key, or None when it cannot take part (or opted out)."""
    if not enabled_by_env():
        return None
    return os.environ.get(HOST_KEY_ENV) or _real_host_key()


def cluster_prefix(cluster_id: str, key: bytes) -> str:
    """The name prefix of this cluster's files; derived from the key, so it is unique."""
    token = hmac.new(key, b"hpcpar-shared-memory", hashlib.sha256).hexdigest()[:16]
    cid = re.sub(r"[^A-Za-z0-9_.]", "", cluster_id)[:32]
    return f"hpcpar-{cid}-{token}-" if cid else f"hpcpar-{token}-"


def export(buffers: list[Any], prefix: str, limit: int) -> tuple[list[Any], list[list[Any]], list[Path]]:
    """Write every buffer of at least ``limit`` bytes to its own new file.

    Returns (the buffers left to send inline, descriptors, paths written).
    On any failure (e.g. /dev/shm full) nothing is exported and the caller
    sends everything through the controller as before."""
    if not any(_nbytes(b) >= limit for b in buffers):
        return buffers, [], []
    inline: list[Any] = []
    descriptors: list[list[Any]] = []
    paths: list[Path] = []
    try:
        for i, buf in enumerate(buffers):
            view = memoryview(buf).cast("B") if _nbytes(buf) >= limit else None
            if view is None:
                inline.append(buf)
                continue
            name = prefix + secrets.token_hex(_RANDOM_HEX // 2)
            path = SHM_DIR / name
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            paths.append(path)
            try:
                _write_all(fd, view)
            finally:
                os.close(fd)
            descriptors.append([i, name, view.nbytes])
    except OSError:
        unlink(paths)
        return buffers, [], []
    return inline, descriptors, paths


def _nbytes(buf: Any) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def _write_all(fd: int, view: memoryview) -> None:
    os.ftruncate(fd, view.nbytes)
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done : done + _MAX_WRITE], done)


def attach(buffers: list[Any], descriptors: Any, prefix: str, remove: bool = False) -> list[Any]:
    """The message's full buffer list, with each described file mapped in its place.

    ``remove``: unlink each file once mapped (a reply: the mapping outlives the
    name). Raises SharedMemoryError, naming the problem, for a bad descriptor."""
    if not isinstance(descriptors, list):
        raise SharedMemoryError("malformed shared-memory descriptor: expected a list")
    checked = [_check(d, prefix) for d in descriptors]
    total = len(buffers) + len(checked)
    out: list[Any] = [None] * total
    try:
        for index, name, size in checked:
            if index >= total or out[index] is not None:
                raise SharedMemoryError(f"malformed shared-memory descriptor: bad buffer index {index}")
            out[index] = memoryview(_map(name, size))
    finally:
        if remove:
            unlink([SHM_DIR / name for _, name, _ in checked])
    rest = iter(buffers)
    return [b if b is not None else next(rest) for b in out]


def _check(d: Any, prefix: str) -> tuple[int, str, int]:
    if not (isinstance(d, list) and len(d) == 3 and isinstance(d[0], int) and isinstance(d[1], str)
            and isinstance(d[2], int) and d[0] >= 0 and d[2] >= 0):
        raise SharedMemoryError(f"malformed shared-memory descriptor {d!r}: expected [index, name, nbytes]")
    name = d[1]
    rest = name[len(prefix):]
    if not name.startswith(prefix) or len(rest) != _RANDOM_HEX or not re.fullmatch(r"[0-9a-f]+", rest):
        raise SharedMemoryError(
            f"refusing shared-memory name {name!r}: not a file of this cluster ({prefix}<{_RANDOM_HEX} hex digits>)")
    return d[0], name, d[2]


def _map(name: str, size: int) -> Any:
    path = SHM_DIR / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SharedMemoryError(
            f"shared-memory file {path} is gone: its sender removed it (closed client, aborted or "
            "finished task) or the cluster was stopped; send the data again") from None
    except OSError as e:
        raise SharedMemoryError(f"cannot open shared-memory file {path}: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise SharedMemoryError(f"refusing shared-memory file {path}: not a regular file of this user")
        if st.st_size != size:
            raise SharedMemoryError(
                f"shared-memory file {path} holds {st.st_size} bytes, the message says {size}")
        if size == 0:
            return bytearray()
        # Copy-on-write: zero-copy, writable, and no change reaches the file.
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)


def unlink(paths: Iterable[Path]) -> None:
    """Remove the names, quietly (already gone is fine); whoever maps a file keeps its memory."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def names_in(meta: dict[str, Any], prefix: str) -> list[Path]:
    """The files a message's descriptor names, if they are valid names of this cluster."""
    out = []
    for d in meta.get("shm") or []:
        try:
            out.append(SHM_DIR / _check(d, prefix)[1])
        except SharedMemoryError:
            pass
    return out


def remove_leftovers(prefix: str) -> int:
    """Remove every file of this cluster (when the controller exits, and on `hpcpar stop`)."""
    if not prefix.startswith("hpcpar-") or not SHM_DIR.is_dir():
        return 0
    count = 0
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(prefix):
            try:
                os.unlink(entry.path)
                count += 1
            except OSError:
                pass
    return count
