"""The %px magics, driven through a real IPython InteractiveShell against the shared cluster."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time

import pytest

pytest.importorskip("IPython")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import hpcpar  # noqa: E402
from hpcpar.client import magics  # noqa: E402


class Recorder:
    """Stands in for sys.stdout / sys.stderr: keeps each write with its time."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.writes)

    def first_time(self, needle: str) -> float:
        seen = ""
        for when, text in self.writes:
            seen += text
            if needle in seen:
                return when
        raise AssertionError(f"{needle!r} never written; got:\n{self.text}")


@pytest.fixture()
def ip(rc):
    shell = InteractiveShell.instance()
    shell.colors = "nocolor"  # lowercase: accepted by IPython 8 and 9
    magics._active.clear()  # fresh defaults for every test
    rc.activate()
    shell.out, shell.err = Recorder(), Recorder()
    yield shell
    for m in list(magics._active.values()):
        if m._autopx:
            m.autopx()
    magics._active.clear()


def run(shell, code: str):
    """Run a cell with sys.stdout / sys.stderr recorded (pytest swaps them between phases)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = shell.out, shell.err
    try:
        return shell.run_cell(code, store_history=False)
    finally:
        sys.stdout, sys.stderr = saved


def stdout_lines(shell) -> list[str]:
    return shell.out.text.splitlines()


def engine_lines(shell, needle: str) -> list[str]:
    """Streamed lines containing needle, sorted: a blocking %px shows each engine's output as it
    arrives (as ipyparallel does), so engines that finish first come first."""
    return sorted(line for line in stdout_lines(shell) if needle in line)


def test_px_runs_on_every_engine_and_shows_cell_values(ip):
    assert run(ip, "%px a = 5").success
    assert run(ip, "%px a * 2").success
    text = ip.out.text
    for eid in range(4):
        assert re.search(rf"^Out\[{eid}:\d+\]: 10$", text, re.M), text
    assert run(ip, "%px print('rank', a + 1)").success
    assert engine_lines(ip, "rank") == [f"[stdout:{eid}] rank 6" for eid in range(4)]


def test_streamed_output_arrives_while_the_cell_runs_with_prefixes(ip):
    code = "%%px --targets 1\nimport time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    assert run(ip, code).success
    end = time.monotonic()
    lines = [line for line in stdout_lines(ip) if "tick" in line]
    assert lines == ["[stdout:1] tick 0", "[stdout:1] tick 1", "[stdout:1] tick 2"]
    # tick 0 was shown about a second before the cell finished: streamed, not at the end
    assert end - ip.out.first_time("tick 0") > 0.6


def test_streamed_lines_of_several_engines_never_mix(ip):
    code = ("%%px\nimport sys, time\nfor i in range(3):\n    sys.stdout.write('part-')\n    sys.stdout.flush()\n"
            "    time.sleep(0.05)\n    print('line', i)\n_ = sys.stderr.write('warn\\n')\n")
    assert run(ip, code).success
    out = [line for line in stdout_lines(ip) if line.strip()]
    for line in out:
        m = re.fullmatch(r"\[stdout:(\d)\] (part-)?(line \d)?", line)
        assert m and (m.group(2) or m.group(3)), line
    for eid in range(4):
        # each engine's text, put back together in order, is exactly what it printed
        mine = "".join(line.split("] ", 1)[1] + ("\n" if line.endswith(tuple("012")) else "")
                       for line in out if line.startswith(f"[stdout:{eid}]"))
        assert mine == "part-line 0\npart-line 1\npart-line 2\n"
    assert sorted(line for line in ip.err.text.splitlines() if "warn" in line) == [
        f"[stderr:{eid}] warn" for eid in range(4)
    ]


def test_no_stream_groups_outputs_by_type_engine_or_order(ip):
    code = "print('out', {t})\nimport sys; print('err', {t}, file=sys.stderr)\ndisplay({t}*10)"
    setup = "%px import hpcpar.engine.namespace as _n; rank = int(__import__('os').getpid())"
    assert run(ip, setup).success
    ip.out.writes.clear()
    assert run(ip, "%%px --no-stream --targets [0,1] --group-outputs engine\nprint('out')\ndisplay('shown')\n").success
    labels = [line for line in stdout_lines(ip) if line.startswith("[")]
    assert labels == ["[stdout:0] out", "[output:0]", "[stdout:1] out", "[output:1]"]
    ip.out.writes.clear()
    assert run(ip, "%%px --no-stream --targets [0,1] --group-outputs type\nprint('out')\ndisplay('shown')\n").success
    labels = [line for line in stdout_lines(ip) if line.startswith("[")]
    assert labels == ["[stdout:0] out", "[stdout:1] out", "[output:0]", "[output:1]"]
    ip.out.writes.clear()
    assert run(ip, "%%px --no-stream --targets [0,1] -r\ndisplay('first')\ndisplay('second')\n").success
    shown = [line for line in stdout_lines(ip) if line.startswith("[output") or "'" in line]
    assert shown == ["[output:0]", "'first'", "[output:1]", "'first'",
                     "[output:0]", "'second'", "[output:1]", "'second'"]
    del code


def test_targets_option_and_slices(ip):
    assert run(ip, "%px --targets ::2 print('here')").success
    assert sorted(line for line in stdout_lines(ip) if "here" in line) == ["[stdout:0] here", "[stdout:2] here"]
    ip.out.writes.clear()
    assert run(ip, "%px -t 3 import os; os.getpid() > 0").success
    assert re.findall(r"Out\[(\d+):\d+\]: True", ip.out.text) == ["3"]


def test_noblock_returns_the_async_result_and_pxresult_shows_it(ip):
    res = run(ip, "%px --noblock -o pending import time; time.sleep(0.3); print('later'); 7 * 6")
    assert res.success
    ar = ip.user_ns["pending"]
    assert isinstance(ar, hpcpar.AsyncResult) and res.result is ar
    assert "later" not in ip.out.text
    assert run(ip, "%pxresult").success
    assert ar.ready()
    text = ip.out.text
    assert [line for line in text.splitlines() if "later" in line] == [f"[stdout:{e}] later" for e in range(4)]
    assert len(re.findall(r"Out\[\d:\d+\]: 42", text)) == 4


def test_an_error_shows_each_remote_traceback_once(ip):
    res = run(ip, "%%px --targets [0,1]\nx = 1\n1 / (x - 1)\n")
    assert not res.success
    assert isinstance(res.error_in_exec, hpcpar.error.AlreadyDisplayedError)
    text = ip.out.text
    assert text.count("Traceback (most recent call last)") == 2
    assert text.count("1 / (x - 1)") == 2  # the remote source line, once per engine
    assert text.count("[Engine 0] ZeroDivisionError") == 1 and text.count("[Engine 1] ZeroDivisionError") == 1
    assert "AlreadyDisplayedError: 2 errors on engines [0, 1]" in text
    # Not streamed: raised as a CompositeError that IPython renders, still once each.
    ip.out.writes.clear()
    res = run(ip, "%%px --no-stream --targets [2,3]\nraise ValueError('bad ' + 'value')\n")
    assert isinstance(res.error_in_exec, hpcpar.CompositeError)
    assert ip.out.text.count("Traceback (most recent call last)") == 2, ip.out.text
    assert ip.out.text.count("[2:execute]") == 1 and ip.out.text.count("ValueError: bad value") == 2


def test_autopx_sends_cells_to_the_engines_until_turned_off(ip):
    assert run(ip, "%autopx").success
    assert "enabled" in ip.out.text
    assert run(ip, "where = 'engine'\nprint(where)").success
    assert run(ip, "%autopx").success
    assert "disabled" in ip.out.text
    assert engine_lines(ip, "] engine") == [f"[stdout:{e}] engine" for e in range(4)]
    assert "where" not in ip.user_ns  # it ran remotely, not here
    assert run(ip, "where = 'here'").success
    assert ip.user_ns["where"] == "here"
    assert rc_pull(ip, "where") == ["engine"] * 4


def rc_pull(ip, name):
    return magics._active[""].view.pull(name, block=True)


def _interrupt_when_started(ip, n_engines: int, timeout: float = 20) -> threading.Thread:
    """Send SIGINT to this process (as Ctrl-C does) once every engine printed 'started'."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ar = ip.user_ns.get("longrun")
            outs = [] if ar is None else [ar.stdout] if isinstance(ar.stdout, str) else ar.stdout
            if sum("started" in s for s in outs) == n_engines:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_ctrl_c_interrupts_the_engines_which_keep_serving(ip):
    ip.user_ns.pop("longrun", None)
    watcher = _interrupt_when_started(ip, 2)
    t0 = time.monotonic()
    res = run(ip, "%%px --targets [0,1] -o longrun\nimport time\nprint('started', flush=True)\ntime.sleep(30)\nprint('not reached')\n")
    watcher.join(5)
    assert time.monotonic() - t0 < 20
    assert isinstance(res.error_in_exec, hpcpar.error.AlreadyDisplayedError)
    assert {e.ename for e in res.error_in_exec.errors} == {"KeyboardInterrupt"}
    assert "sent SIGINT to engines [0, 1]" in ip.err.text
    assert "not reached" not in ip.out.text
    ip.out.writes.clear()
    assert run(ip, "%px print('alive')").success
    assert engine_lines(ip, "alive") == [f"[stdout:{e}] alive" for e in range(4)]


def test_the_interrupt_signal_is_configurable(ip):
    ip.user_ns.pop("longrun", None)
    code = (
        "%%px --targets 2 --signal-on-interrupt SIGUSR1 -o longrun\n"
        "import signal, time\n"
        "def _usr1(*a):\n    raise RuntimeError('got USR1')\n"
        "old = signal.signal(signal.SIGUSR1, _usr1)\n"
        "try:\n    print('started', flush=True)\n    time.sleep(30)\n"
        "finally:\n    signal.signal(signal.SIGUSR1, old)\n"
    )
    watcher = _interrupt_when_started(ip, 1)
    res = run(ip, code)
    watcher.join(5)
    assert "sent SIGUSR1 to engine [2]" in ip.err.text
    assert [e.evalue for e in res.error_in_exec.errors] == ["got USR1"]
    assert run(ip, "%pxconfig --signal-on-interrupt none").success
    assert magics._active[""].signal_on_interrupt is None
    assert run(ip, "%px -t 2 print('still here')").success
    assert "[stdout:2] still here" in ip.out.text


def test_suffixes_give_several_views_at_once(ip, rc):
    even = rc[::2]
    even.block = True  # the magics block as their view does
    even.activate("_even")
    rc[1::2].activate("_odd")
    assert run(ip, "%px_even parity = 'even'").success
    assert isinstance(run(ip, "%px_odd parity = 'odd'").result, hpcpar.AsyncResult)
    assert run(ip, "%pxresult_odd").success
    assert run(ip, "%%px_odd --block\nprint(parity)\n").success
    assert rc[:].pull("parity", block=True) == ["even", "odd", "even", "odd"]
    assert engine_lines(ip, "odd") == ["[stdout:1] odd", "[stdout:3] odd"]


def test_pxconfig_sets_defaults(ip):
    assert run(ip, "%pxconfig --targets 1 --noblock").success
    res = run(ip, "%px 1 + 1")
    assert isinstance(res.result, hpcpar.AsyncResult)
    assert res.result.get(timeout=10).data == {"text/plain": "2"} == res.result.execute_result["data"]
    assert res.result.engine_id == 1
    assert run(ip, "%pxconfig --block --targets all --no-stream").success
    assert run(ip, "%px print('blocking again')").success
    assert len([line for line in stdout_lines(ip) if "blocking again" in line]) == 4


def test_local_runs_the_cell_here_too(ip):
    assert run(ip, "%%px --local --targets 0\nboth = 'set'\n").success
    assert ip.user_ns["both"] == "set"
    assert magics._active[""].view.pull("both", targets=0, block=True) == "set"


def test_progress_after_shows_a_progress_line_when_waiting(ip):
    assert run(ip, "%px --progress-after 0 --targets [0,1] import time; time.sleep(0.6)").success
    assert re.search(r"px: [12]/2", ip.err.text), ip.err.text
    ip.err.writes.clear()
    assert run(ip, "%px --progress-after -1 --targets [0,1] import time; time.sleep(0.3)").success
    assert "px:" not in ip.err.text


def test_rich_output_and_figures_arrive(ip):
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        res = run(ip, "%%px --targets 0\nfrom IPython.display import HTML, display\n"
                      "display(HTML('<b>engine html</b>'))\nHTML('<i>as value</i>')\n")
    assert res.success
    data = [o.data for o in cap.outputs]
    assert {"text/html": "<b>engine html</b>"}.items() <= data[0].items()
    assert {"text/html": "<i>as value</i>"}.items() <= data[1].items()
    assert "[output:0]" in ip.out.text and "Out[0:" in ip.out.text
    pytest.importorskip("matplotlib")
    with capture_output() as cap:
        res = run(ip, "%%px --targets 1\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\n"
                      "print('drawn')\n")
    assert res.success, ip.out.text
    pngs = [o.data["image/png"] for o in cap.outputs if "image/png" in o.data]
    assert len(pngs) == 1
    import base64

    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_magics_before_any_client_say_what_to_do(rc):
    shell = InteractiveShell.instance()
    magics._active.clear()
    try:
        hpcpar.load_ipython_extension(shell)
        assert magics._active[""].view is None
        res = shell.run_cell("%px 1", store_history=False)
        assert "create a client" in str(res.error_in_exec)
        client = hpcpar.Client(profile="shared", timeout=30)  # auto-activates
        try:
            assert magics._active[""].view.client is client
        finally:
            client.close()
    finally:
        magics._active.clear()


def test_px_line_magics_and_shell_escapes_run_on_the_engines(ip, tmp_path):
    """%px with IPython syntax on the line: each engine's own shell runs it."""
    import socket

    script = tmp_path / "on_engines.py"
    script.write_text("ran_script = __name__\nprint('script ran')\n")
    (tmp_path / "listed.txt").write_text("x")
    assert run(ip, "%px --targets 0:2 %time timed = sum(range(1000))").success
    assert sorted(re.findall(r"^\[stdout:(\d)\] Wall time", ip.out.text, re.M)) == ["0", "1"], ip.out.text
    assert run(ip, f"%px --targets 0:2 %run {script}").success
    assert engine_lines(ip, "script ran") == ["[stdout:0] script ran", "[stdout:1] script ran"]
    assert ip.user_ns.get("ran_script") is None  # it ran on the engines, not here
    assert run(ip, f"%px --targets 0:2 files = !ls {tmp_path}").success
    assert run(ip, "%px --targets 0:2 %whos").success
    whos = [line for line in stdout_lines(ip) if "SList" in line or ("int" in line and "timed" in line)]
    assert len([w for w in whos if "files" in w]) == 2 and len([w for w in whos if "timed" in w]) == 2, whos
    assert run(ip, "%px --targets 0:2 !hostname").success
    host = socket.gethostname()
    assert sorted(line for line in stdout_lines(ip) if line.endswith(host)) == [f"[stdout:0] {host}", f"[stdout:1] {host}"]
    assert ip.user_ns.get("timed") is None and ip.user_ns.get("files") is None
