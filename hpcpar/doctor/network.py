"""Network reachability: a plain TCP listener bound and advertised exactly as the
controller would be (``[controller] ip``, ``location``, ``engine_port``), which the
test job connects to from the compute node.

The listener, not the job, is the authority on what was reached: a connection that
arrived with the right token proves the path works, whatever the job says.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from ..netutil import advertised_addresses, bind_address
from .probe import MAGIC
from .report import FAIL, OK, WARN, Check

_SIOCGIFADDR = 0x8915
MAX_REPORT = 1 << 20


def interface_address(name: str) -> str | None:
    """The IPv4 address of interface ``name`` (the controller accepts --ip eth0)."""
    try:
        if name not in {n for _, n in socket.if_nameindex()}:
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        return socket.inet_ntoa(packed[20:24])
    except OSError:
        return None


@dataclass
class Arrival:
    index: int
    peer: str
    report: str = ""


@dataclass
class Listener:
    """Accepts the test job's connections until closed; ``arrivals`` is what came in."""

    ip: str
    location: str = ""
    port: int = 0
    token: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    def open(self) -> None:
        host = bind_address(self.ip)
        host = "" if host == "*" else (interface_address(host) or host)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, self.port))
        except OSError:
            if not self.port:
                raise
            self.sock.bind((host, 0))  # the configured port is taken (a running cluster): any port
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        addresses = advertised_addresses(self.ip)
        if self.location:
            addresses = [self.location, *(a for a in addresses if a != self.location)]
        self.addresses = addresses
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="doctor-listener", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn, peer[0]), daemon=True).start()

    def _read(self, conn: socket.socket, peer: str) -> None:
        conn.settimeout(30)
        data = b""
        try:
            while len(data) < MAX_REPORT:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        finally:
            conn.close()
        first, _, rest = data.decode(errors="replace").partition("\n")
        parts = first.split()
        if len(parts) != 3 or parts[0] != MAGIC or parts[1] != self.token or not parts[2].isdigit():
            return  # not our job: a scanner, or another doctor run
        with self._lock:
            self.arrivals.append(Arrival(int(parts[2]), peer, rest.strip()))

    def reached(self) -> list[int]:
        with self._lock:
            return sorted({a.index for a in self.arrivals})

    def report_text(self) -> str:
        with self._lock:
            return next((a.report for a in self.arrivals if a.report), "")

    def wait_report(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.report_text()
            if text:
                return text
            time.sleep(0.1)
        return self.report_text()

    def close(self) -> None:
        self._closed.set()
        self.sock.close()
        self._thread.join(timeout=2)


def ip_fix(ip: str, source: str, location: str) -> str:
    """Advice when the compute node reached none of the advertised addresses."""
    if ip in ("*", "0.0.0.0", "") and not location:
        return ("the controller would listen on every interface, so something between the compute node and "
                "this host blocks the port (a firewall): open it, or pin the ports with controller.port / "
                "engine_port and open those; or pass --ip with an address of this host on the compute network")
    return (f"the controller would listen on {ip!r} (from {source}), which the compute node cannot reach: "
            "pass --ip '*' (or --ip with this host's address on the compute network), or set ip in "
            "[controller] of the profile's config.toml; if --ip '*' also fails, a firewall blocks the port")


def reach_check(listener: Listener, probe: dict | None, ip: str, source: str, host: str) -> Check:
    """The controller-reach row, from what arrived at the listener and what the job said."""
    reached = listener.reached()
    urls = [f"{a}:{listener.port}" for a in listener.addresses]
    errors = {}
    for i, entry in enumerate((probe or {}).get("addresses", [])):
        if not entry.get("reached") and entry.get("error"):
            errors[i] = entry["error"]
    tried = ", ".join(f"{u} ({errors[i]})" if i in errors else u for i, u in enumerate(urls))
    details = {"advertised": urls, "reached": [urls[i] for i in reached if i < len(urls)], "ip": ip}
    if not reached:
        return Check("controller-reach", FAIL, f"{host} reached none of the controller's addresses: {tried}",
                     ip_fix(ip, source, listener.location), details)
    ok = ", ".join(urls[i] for i in reached)
    if reached[0] != 0:
        missed = ", ".join(f"{u} ({errors[i]})" if i in errors else u for i, u in enumerate(urls) if i not in reached)
        return Check("controller-reach", WARN,
                     f"{host} reached {ok}, not {missed}",
                     "engines try the addresses in order, each for up to connect_timeout: set location = "
                     f"\"{listener.addresses[reached[0]]}\" in [controller] (or --set controller.location="
                     f"{listener.addresses[reached[0]]}) so they try it first", details)
    return Check("controller-reach", OK, f"{host} reached {ok}", "", details)
