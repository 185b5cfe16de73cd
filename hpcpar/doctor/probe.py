"""The test job's program: runs on a compute node as ``python -c <this file's text>``.

Standard library only, and no import of hpcpar needed: it must still report when
hpcpar is missing on the node. It reads its orders from $HPCPAR_DOCTOR_PROBE (JSON),
tries a TCP connection to every address the controller would advertise, reads the
file the login node wrote into the profile directory, and sends its report back over
the first connection that worked; it also writes the report next to that file (when
the profile directory is shared) and prints it to the job's output.
"""

import json
import os
import platform
import shutil
import socket
import sys
import time

PROBE_ENV = "HPCPAR_DOCTOR_PROBE"
MAGIC = "HPCPAR-DOCTOR"


def hpcpar_facts():
    try:
        import hpcpar
    except Exception as e:  # noqa: BLE001 - any import failure is the finding
        return {"importable": False, "error": f"{type(e).__name__}: {e}"}
    facts = {"importable": True, "version": getattr(hpcpar, "__version__", "?"),
             "path": os.path.dirname(getattr(hpcpar, "__file__", "") or ""), "engine_error": ""}
    try:  # the engine's own imports (pyzmq ...): `import hpcpar` alone is lazy
        import hpcpar.engine.app  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is the finding
        facts["engine_error"] = f"{type(e).__name__}: {e}"
    return facts


def zmq_facts():
    try:
        import zmq
    except Exception as e:  # noqa: BLE001 - any import failure is the finding
        return {"importable": False, "error": f"{type(e).__name__}: {e}"}
    return {"importable": True, "version": zmq.pyzmq_version(), "libzmq": zmq.zmq_version(),
            "curve": bool(zmq.has("curve"))}


def mpi_facts():
    import importlib.util

    return {"mpiexec": shutil.which("mpiexec") or "", "mpi4py": importlib.util.find_spec("mpi4py") is not None}


def try_addresses(orders):
    """(results, first open socket): one entry per advertised address, in order."""
    results, kept = [], None
    for index, (host, port) in enumerate(orders["addresses"]):
        started = time.time()
        entry = {"host": host, "port": port, "reached": False, "error": ""}
        try:
            sock = socket.create_connection((host, port), timeout=float(orders.get("connect_timeout", 5)))
            sock.sendall(f"{MAGIC} {orders['token']} {index}\n".encode())
            entry["reached"] = True
            if kept is None:
                kept = sock
            else:
                sock.close()
        except OSError as e:
            entry["error"] = e.strerror or str(e)
        entry["seconds"] = round(time.time() - started, 3)
        results.append(entry)
    return results, kept


def try_running(orders):
    """TCP connect (and close, sending nothing) to a running controller's engine URLs."""
    results = []
    for host, port in orders.get("running", []):
        entry = {"host": host, "port": port, "reached": False, "error": ""}
        try:
            socket.create_connection((host, port), timeout=float(orders.get("connect_timeout", 5))).close()
            entry["reached"] = True
        except OSError as e:
            entry["error"] = e.strerror or str(e)
        results.append(entry)
    return results


def shared_file_facts(orders):
    path = orders.get("shared_file", "")
    try:
        with open(path) as f:
            seen = f.read()
    except OSError as e:
        return {"path": path, "seen": False, "error": e.strerror or str(e)}
    return {"path": path, "seen": seen == orders.get("shared_text"), "error": "" if seen == orders.get(
        "shared_text") else "the file holds something else"}


def main():
    orders = json.loads(os.environ[PROBE_ENV])
    report = {
        "token": orders["token"],
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "hpcpar": hpcpar_facts(),
        "zmq": zmq_facts(),
        "mpi": mpi_facts(),
        "shared": shared_file_facts(orders),
    }
    report["running"] = try_running(orders)
    report["addresses"], sock = try_addresses(orders)
    text = json.dumps(report)
    if sock is not None:
        try:
            sock.sendall((text + "\n").encode())
        except OSError:
            pass
        sock.close()
    report_file = orders.get("report_file", "")
    if report_file and os.path.isdir(os.path.dirname(report_file)):
        try:
            with open(report_file + ".tmp", "w") as f:
                f.write(text)
            os.replace(report_file + ".tmp", report_file)
        except OSError:
            pass
    print(MAGIC + "-REPORT " + text)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
