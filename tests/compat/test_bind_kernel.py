"""bind_kernel: an engine also serves a Jupyter kernel on its namespace, driven
here by jupyter_client as `jupyter console --existing` would."""

from __future__ import annotations

import json
import os
import time

import pytest
from cluster_helpers import start_cluster

import hpcpar

pytest.importorskip("IPython")
jupyter_client = pytest.importorskip("jupyter_client")


@pytest.fixture()
def kernel_cluster(tmp_path):
    runtime = tmp_path / "jupyter-runtime"
    cluster, rc = start_cluster(2, f"bind-kernel-{os.getpid()}", env={"JUPYTER_RUNTIME_DIR": str(runtime)})
    try:
        yield rc, runtime
    finally:
        cluster.stop_cluster_sync()


def _client(connection_file: str):
    kc = jupyter_client.BlockingKernelClient(connection_file=connection_file)
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    return kc


def _run(kc, code: str, **kw):
    outputs: list[tuple[str, dict]] = []
    reply = kc.execute_interactive(code, timeout=30, output_hook=lambda m: outputs.append(
        (m["msg_type"], m["content"])), **kw)
    return reply["content"], outputs


def test_kernel_shares_the_engine_namespace(kernel_cluster):
    rc, runtime = kernel_cluster
    path = rc[1].apply_sync(hpcpar.bind_kernel)
    assert os.path.dirname(path) == str(runtime) and "engine-1" in os.path.basename(path)
    info = json.loads(open(path).read())
    assert info["ip"] == "127.0.0.1" and info["signature_scheme"] == "hmac-sha256"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert rc[1].apply_sync(hpcpar.bind_kernel) == path  # binding again: the same kernel

    rc[1].push({"pushed": 41}, block=True)
    kc = _client(path)
    try:
        content, outputs = _run(kc, "print('seen', pushed)\nfrom_console = pushed + 1\nfrom_console * 2")
        assert content["status"] == "ok"
        text = "".join(c["text"] for t, c in outputs if t == "stream")
        assert text == "seen 41\n"
        results = [c for t, c in outputs if t == "execute_result"]
        assert results[0]["data"]["text/plain"] == "84"
        # what the console defined is the engine's too; execution counts are shared
        assert rc[1].pull("from_console", block=True) == 42
        reply = rc[1].execute("1", silent=False).get(timeout=30)
        assert reply.execution_count == content["execution_count"] + 1
        # magics work in the console as in %px
        content, outputs = _run(kc, "%time x = 1")
        assert any("Wall time" in c.get("text", "") for t, c in outputs if t == "stream")
        # the other engine serves no kernel and is untouched
        with pytest.raises(hpcpar.RemoteError):
            rc[0].pull("from_console", block=True)
    finally:
        kc.stop_channels()
    rc.shutdown(targets=[1], block=True)  # the engine stops (SIGTERM): its kernel file goes with it
    deadline = time.monotonic() + 20
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(path)


def test_console_features_errors_and_interrupt(kernel_cluster):
    rc, _ = kernel_cluster
    rc[0].push({"pushed_value": 1}, block=True)
    path = rc[0].apply_sync(hpcpar.bind_kernel)
    kc = _client(path)
    try:
        info = kc.kernel_info(reply=True, timeout=10)["content"]
        assert info["language_info"]["name"] == "python" and info["protocol_version"].startswith("5.")
        matches = kc.complete("pushed_v", 8, reply=True, timeout=10)["content"]["matches"]
        assert "pushed_value" in matches
        assert kc.inspect("pushed_value", 12, reply=True, timeout=10)["content"]["found"]
        msg_id = kc.is_complete("for i in range(3):")
        assert kc.get_shell_msg(timeout=10)["content"]["status"] == "incomplete" and msg_id

        content, outputs = _run(kc, "def fails():\n    raise ValueError('in console')\nfails()")
        assert content["status"] == "error" and content["ename"] == "ValueError"
        errors = [c for t, c in outputs if t == "error"]
        assert "raise ValueError('in console')" in "\n".join(errors[0]["traceback"])

        # %debug: a post-mortem of that error, its prompts answered over the stdin channel
        answers = iter(["p pushed_value + 41", "q"])
        prompts: list[str] = []

        def answer(msg):
            prompts.append(msg["content"]["prompt"])
            kc.input(next(answers))

        content, outputs = _run(kc, "%debug", allow_stdin=True, stdin_hook=answer)
        text = "".join(c.get("text", "") for t, c in outputs if t == "stream")
        assert content["status"] == "ok" and prompts == ["ipdb> ", "ipdb> "]
        assert "raise ValueError('in console')" in text and "\n42\n" in text

        kc.execute("import time\ntime.sleep(60)")
        time.sleep(1.0)  # the cell is running on the engine's main thread
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
        reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert rc[0].apply_sync(lambda: "still serving") == "still serving"
    finally:
        kc.stop_channels()


def test_px_binds_and_shutdown_unbinds_but_the_engine_keeps_serving(kernel_cluster):
    rc, _ = kernel_cluster
    rc[1].execute("import hpcpar\nconnection = hpcpar.bind_kernel()", block=True)
    path = rc[1].pull("connection", block=True)
    assert os.path.exists(path)
    kc = _client(path)
    try:
        kc.shutdown()
        deadline = time.monotonic() + 20
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(path)
    finally:
        kc.stop_channels()
    assert rc[1].apply_sync(lambda: 6 * 7) == 42
    assert os.path.exists(rc[1].apply_sync(hpcpar.bind_kernel))  # can be bound again


def test_connect_info_and_qtconsole_magics_bind_the_kernel(kernel_cluster):
    """%px %connect_info / %px %qtconsole, as on ipyparallel's engines (which are ipykernels)."""
    rc, runtime = kernel_cluster
    out = rc[0].execute("%connect_info", block=True).stdout
    path = rc[0].apply_sync(hpcpar.bind_kernel)  # the magic bound it: binding again gives its file
    assert f"jupyter console --existing {path}" in out
    assert json.loads(out[:out.index("\nConnection file")]) == json.loads(open(path).read())
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[1].execute("%qtconsole", block=True)  # no qtconsole (or no display) where the engines run
    assert info.value.ename == "UsageError" and "jupyter console --existing " in str(info.value.traceback)
    assert os.path.dirname(info.value.traceback.rsplit(" ", 1)[1]) == str(runtime)  # engine 1's file


def test_bind_kernel_outside_an_engine_says_where_it_runs():
    with pytest.raises(RuntimeError, match="runs on an engine"):
        hpcpar.bind_kernel()


def test_console_on_a_live_mpi_rank(tmp_path, monkeypatch):
    """The use case: attach to one rank of an MPI job and look at its state."""
    from test_mpi import start_mpi_cluster

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # the engines inherit it
    cluster, rc = start_mpi_cluster(2, f"bind-kernel-mpi-{os.getpid()}")
    try:
        rc[:].execute("from mpi4py import MPI\nstate = {'rank': MPI.COMM_WORLD.Get_rank()}", block=True)
        path = rc[1].apply_sync(hpcpar.bind_kernel)
        assert path.startswith(str(tmp_path / "runtime"))
        kc = _client(path)
        try:
            content, outputs = _run(kc, "state['rank'], MPI.COMM_WORLD.Get_size()")
            assert content["status"] == "ok"
            assert [c["data"]["text/plain"] for t, c in outputs if t == "execute_result"] == ["(1, 2)"]
            _run(kc, "state['seen_by_console'] = True")
        finally:
            kc.stop_channels()
        # collectives across the ranks still work, and the console's change is there
        ar = rc[:].execute("total = MPI.COMM_WORLD.allreduce(state['rank'] + 1)\n(total, 'seen_by_console' in state)",
                           silent=False, block=True)
        assert [r.data["text/plain"] for r in ar.get()] == ["(3, False)", "(3, True)"]
    finally:
        cluster.stop_cluster_sync()


def _console(path: str, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    pytest.importorskip("jupyter_console")
    import shutil
    import sys

    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable)) or shutil.which("jupyter")
    assert jupyter, "jupyter (jupyter_core) is not installed next to this Python"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "TERM": "dumb"}
    child = pexpect.spawn(jupyter, ["console", "--existing", path, "--simple-prompt"], env=env,
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect(r"hpcpar engine \d+ on ")  # the kernel's banner
    child.expect(r"In \[\d+\]: ")
    return child


def test_real_jupyter_console_attaches(kernel_cluster, tmp_path):
    """`jupyter console --existing FILE` as a user runs it: a real process at a pty."""
    import pexpect

    rc, _ = kernel_cluster
    rc[1].push({"pushed_from_client": [1, 2, 3]}, block=True)
    path = rc[1].apply_sync(hpcpar.bind_kernel)
    child = _console(path, tmp_path)
    try:
        child.sendline("print('sum is', sum(pushed_from_client)); made_in_console = 'yes'")
        child.expect("sum is 6")
        child.expect(r"In \[\d+\]: ")
        child.sendline("len(pushed_from_client) * 7")
        child.expect(r"Out\[\d+\]: 21")
        child.expect(r"In \[\d+\]: ")
        child.sendline("quit(keep_kernel=True)")  # detach: the kernel stays bound
        child.expect("keeping kernel alive")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert rc[1].pull("made_in_console", block=True) == "yes"
    assert os.path.exists(path)
    assert rc[1].apply_sync(lambda: 6 * 7) == 42

    child = _console(path, tmp_path)  # attach again; plain `exit` shuts the kernel down
    try:
        child.sendline("made_in_console")
        child.expect(r"Out\[\d+\]: 'yes'")
        child.expect(r"In \[\d+\]: ")
        child.sendline("exit")
        child.expect("Shutting down kernel")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    deadline = time.monotonic() + 20
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(path)
    rc[1].execute("exit_kind = type(exit).__name__", block=True)  # the engine's own exit is back
    assert rc[1].pull("exit_kind", block=True) == "ExitAutocall"
    assert rc[1].apply_sync(lambda: 6 * 7) == 42
