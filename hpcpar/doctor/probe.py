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
import subprocess
import sys
import time

PROBE_ENV = "HPCPAR_DOCTOR_PROBE"
MAGIC = "HPCPAR-DOCTOR"
# The two-rank MPI test (also run on the login node, doctor/mpi.py). Rank 0 alone prints (two
# ranks' lines can interleave): the size it sees and the ranks it gathered; a mismatched mpi4py
# gives two "size 1" singletons.
MPI_PAIR = ("from mpi4py import MPI; c = MPI.COMM_WORLD; seen = sorted(c.allgather(c.Get_rank()))\n"
            "if c.Get_rank() == 0 or c.Get_size() == 1: print('HPCPAR-MPI', c.Get_size(), seen, flush=True)")
MPI_PAIR_OK = "HPCPAR-MPI 2 [0, 1]"


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


def _default_mpiexec():
    """As hpcpar's engines find it: next to this Python first, then on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec") or ""


def mpi_facts(orders):
    """mpiexec and mpi4py on this node; with orders["mpi"]["run"], two ranks started here by
    that mpiexec and whether they saw each other."""
    import importlib.util

    wanted = orders.get("mpi") or {}
    command = list(wanted.get("command") or []) or [c for c in [_default_mpiexec()] if c]
    facts = {"mpiexec": command[0] if command else "", "mpi4py": importlib.util.find_spec("mpi4py") is not None,
             "ran": False}
    if not (wanted.get("run") and command and facts["mpi4py"]):
        return facts
    argv = [*command, wanted.get("n_flag") or "-n", "2", *(wanted.get("args") or []), sys.executable,
            "-c", MPI_PAIR]
    facts.update(ran=True, argv=" ".join(argv[:3]))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=float(wanted.get("timeout", 60)))
    except subprocess.TimeoutExpired:
        facts.update(returncode=None, seen=[], tail=f"did not finish in {wanted.get('timeout', 60)} s")
        return facts
    except OSError as e:
        facts.update(returncode=None, seen=[], tail=str(e))
        return facts
    facts.update(returncode=done.returncode,
                 seen=[line for line in done.stdout.splitlines() if line.startswith("HPCPAR-MPI")],
                 tail=" | ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]))
    return facts


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
        "mpi": mpi_facts(orders),
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
