"""The shared-memory data path: large buffers between a client and engines on its host.

Whether a buffer went through /dev/shm is observed, not timed: an array that
arrived that way is backed by an mmap of the file (its buffer's owner is an
``mmap.mmap``); one that came through the controller is backed by a ZeroMQ frame.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_helpers import hpcpar_cmd

import hpcpar
from hpcpar import serialize, sharedmem, targetset
from hpcpar.client.asyncresult import AsyncResult
from hpcpar.engine import builtins as engine_builtins

BIG = 1_500_000  # float64: 12 MB, above the 8 MB threshold
SMALL = 100_000  # 800 kB: through the controller


def mapped(a) -> bool:
    """True if ``a``'s memory is an mmap (it arrived through shared memory)."""
    b = a
    for _ in range(20):
        if isinstance(b, mmap.mmap):
            return True
        if isinstance(b, memoryview):
            b = b.obj
            continue
        b = getattr(b, "base", None)
        if b is None:
            return False
    return False


def _engine_value(name: str):
    from hpcpar.engine.namespace import current

    return current().globals[name]


def engine_mapped(name: str) -> bool:
    return mapped(_engine_value(name))


def engine_sum(name: str) -> float:
    return float(_engine_value(name).sum())


def zero_it(name: str) -> None:
    _engine_value(name)[:] = 0


def make_array(n: int):
    import numpy

    return numpy.arange(n, dtype=numpy.float64).reshape(-1, 3)


def arg_info(a):
    return (a.dtype.str, a.shape, float(a.sum()), mapped(a))


def slow_mapped(a):
    time.sleep(0.05)
    return mapped(a)


def shm_files(rc: hpcpar.Client) -> list[str]:
    return sorted(f for f in os.listdir(sharedmem.SHM_DIR) if f.startswith(rc._shm_prefix))


def wait_no_files(rc: hpcpar.Client, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while shm_files(rc) and time.monotonic() < deadline:
        time.sleep(0.05)
    return shm_files(rc)


def test_push_pull_apply_values_through_shared_memory(rc):
    arr = np.random.default_rng(1).random((BIG // 4, 4)).astype(np.float64)
    ints = np.arange(BIG * 2, dtype=np.int32)[::-1].copy()
    dv = rc[0]
    dv.push({"a": arr, "i": ints}, block=True)
    assert dv.apply_sync(engine_mapped, "a") and dv.apply_sync(engine_mapped, "i")
    back = dv.pull("a", block=True)
    assert mapped(back) and back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert back.flags.writeable
    back[0, 0] = -1.0  # copy-on-write: the engine's copy is untouched
    assert dv.apply_sync(engine_sum, "a") == pytest.approx(float(arr.sum()))
    i_back = dv.pull("i", block=True)
    assert i_back.dtype == np.int32 and mapped(i_back)
    np.testing.assert_array_equal(i_back, ints)
    # apply: a large argument and a large result
    dtype, shape, total, was_mapped = dv.apply_sync(arg_info, arr)
    assert (dtype, shape, was_mapped) == (arr.dtype.str, arr.shape, True)
    assert total == pytest.approx(float(arr.sum()))
    made = dv.apply_sync(make_array, BIG * 3)
    assert mapped(made) and made.shape == (BIG, 3)
    np.testing.assert_array_equal(made, np.arange(BIG * 3, dtype=np.float64).reshape(-1, 3))
    # small arrays still go through the controller
    small = np.arange(SMALL, dtype=np.float64)
    dv.push({"s": small}, block=True)
    assert not dv.apply_sync(engine_mapped, "s")
    assert not mapped(dv.pull("s", block=True))
    assert wait_no_files(rc) == []


def test_load_balanced_and_scatter_gather(rc):
    arr = np.arange(BIG * 4, dtype=np.float64)
    lview = rc.load_balanced_view()
    dtype, shape, total, was_mapped = lview.apply_sync(arg_info, arr)
    assert was_mapped and shape == arr.shape and total == float(arr.sum())
    made = lview.apply_sync(make_array, BIG * 3)
    assert mapped(made) and made.shape == (BIG, 3)
    dv = rc[:]
    dv.scatter("x", arr, block=True)
    assert all(dv.apply_sync(engine_mapped, "x"))
    gathered = dv.gather("x", block=True)
    np.testing.assert_array_equal(gathered, arr)
    assert wait_no_files(rc) == []


def fail_once(marker: str, a):
    """Fails on its first call anywhere (the marker file records it), then succeeds."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return float(a.sum()), mapped(a)


def test_retried_load_balanced_task_still_finds_its_data(rc, tmp_path):
    arr = np.arange(BIG, dtype=np.float64)
    lview = rc.load_balanced_view(retries=2)
    total, was_mapped = lview.apply_sync(fail_once, str(tmp_path / "marker"), arr)
    assert total == float(arr.sum()) and was_mapped
    assert wait_no_files(rc) == []


def test_engine_changing_a_broadcast_array_affects_no_one_else(rc):
    arr = np.ones(BIG, dtype=np.float64)
    dv = rc[:2]
    dv.push({"b": arr}, block=True)
    assert all(dv.apply_sync(engine_mapped, "b"))
    rc[0].apply_sync(zero_it, "b")
    assert rc[0].apply_sync(engine_sum, "b") == 0.0
    assert rc[1].apply_sync(engine_sum, "b") == float(BIG)
    assert arr.sum() == float(BIG)
    assert wait_no_files(rc) == []


def test_request_files_go_after_abort_and_after_close(cluster):
    rc = hpcpar.Client(profile="shared", timeout=30)
    try:
        eid = rc.ids[0]
        rc[eid].execute("import time", block=True)
        blocker = rc[eid].execute("time.sleep(3)", block=False)
        queued = rc[eid].push({"q": np.ones(BIG)}, block=False)
        assert len(shm_files(rc)) == 1  # the request's file exists while it waits
        rc.abort(queued)
        with pytest.raises(hpcpar.TaskAborted):
            queued.get(timeout=20)
        blocker.get(timeout=20)
        assert wait_no_files(rc) == []
        # a client that closes with a request still queued removes its file; the result of
        # a pull queued too is removed by the controller, since nobody will read it
        rc[eid].push({"p": np.ones(BIG)}, block=True)
        blocker = rc[eid].execute("time.sleep(1.0)", block=False)
        rc[eid].push({"q": np.ones(BIG)}, block=False)
        rc[eid].pull("p", block=False)
        assert len(shm_files(rc)) == 1
    finally:
        rc.close()
    assert shm_files(rc) == []
    time.sleep(1.5)  # the engine runs the queued push (its file is gone: an error) and pull
    assert wait_no_files(rc) == []


def test_files_go_after_engine_sigkill(private_cluster):
    cluster, rc = private_cluster
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    victim = rc.ids[0]
    rc[victim].execute("import time", block=True)
    running = rc[victim].execute("time.sleep(30)", block=False)
    queued = rc[victim].push({"q": np.ones(BIG)}, block=False)
    assert len(shm_files(rc)) == 1
    time.sleep(0.3)
    os.kill(pids[victim], signal.SIGKILL)
    for ar in (running, queued):
        with pytest.raises(hpcpar.EngineError):
            ar.get(timeout=20)
    assert wait_no_files(rc) == []
    # the other engine keeps using shared memory
    other = rc.ids[-1]
    rc[other].push({"a": np.ones(BIG)}, block=True)
    assert rc[other].apply_sync(engine_mapped, "a")


def _forged_push(rc: hpcpar.Client, eid: int, descriptor: list) -> AsyncResult:
    """A push whose array is said to be in a shared-memory file, signed with the cluster key."""
    payload, buffers = serialize.dumps((engine_builtins.push, ({"f": np.ones(512)},), {}))
    assert len(buffers) == 1
    header = rc._signer.header("apply_request", route="direct", targets=[eid],
                               pickler="cloudpickle", shm=True, shm_key=rc._shm_key)
    frames = rc._signer.pack(header, {"shm": [descriptor]}, payload, [])
    msg_ids = [targetset.task_id(header["msg_id"], eid)]
    ar = AsyncResult(rc, msg_ids, fname="push", targets=[eid], single=True)
    return rc._send_tracked(msg_ids, frames, header, ar, [eid])


@pytest.mark.parametrize("kind", ["missing", "outside", "traversal", "size", "malformed"])
def test_forged_or_missing_descriptor_is_a_clear_error(rc, kind):
    eid = rc.ids[0]
    prefix = rc._shm_prefix
    name = prefix + "0" * 32
    descriptor = {
        "missing": [0, name, 4096],
        "outside": [0, "hpcpar-someone-else-" + "0" * 32, 4096],
        "traversal": [0, "../../etc/passwd", 4096],
        "size": [0, name, 4096],
        "malformed": ["zero", name],
    }[kind]
    path = sharedmem.SHM_DIR / name
    if kind == "size":
        path.write_bytes(b"x" * 100)
    try:
        with pytest.raises(sharedmem.SharedMemoryError) as info:
            _forged_push(rc, eid, descriptor).get(timeout=20)
    finally:
        path.unlink(missing_ok=True)
    expected = {"missing": "is gone", "outside": "not a file of this cluster",
                "traversal": "not a file of this cluster", "size": "holds 100 bytes",
                "malformed": "malformed"}[kind]
    assert expected in str(info.value)
    assert rc[eid].apply_sync(pow, 2, 5) == 32  # the engine keeps serving


def test_opt_out(cluster, monkeypatch):
    arr = np.arange(BIG, dtype=np.float64)
    for make in (lambda: hpcpar.Client(profile="shared", timeout=30, shared_memory=False),
                 lambda: (monkeypatch.setenv(sharedmem.ENABLE_ENV, "0"),
                          hpcpar.Client(profile="shared", timeout=30))[1]):
        rc = make()
        try:
            assert rc._shm_key is None
            rc[0].push({"o": arr}, block=True)
            assert not rc[0].apply_sync(engine_mapped, "o")
            back = rc[0].pull("o", block=True)
            assert not mapped(back)
            np.testing.assert_array_equal(back, arr)
        finally:
            rc.close()
        monkeypatch.delenv(sharedmem.ENABLE_ENV, raising=False)


def test_engine_with_another_host_key_gets_the_controller_path(private_cluster):
    cluster, rc = private_cluster
    local = rc.ids
    env = {**os.environ, sharedmem.HOST_KEY_ENV: "somewhere-else"}
    proc = subprocess.Popen(hpcpar_cmd("engine", "--profile-dir", str(cluster.profile_dir.path)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rc.wait_for_engines(len(local) + 1, timeout=60, interactive=False)
        foreign = next(e for e in rc.ids if e not in local)
        assert rc._engines[foreign]["host_key"] == "somewhere-else"
        arr = np.arange(BIG, dtype=np.float64)
        for targets in ([foreign], [local[0], foreign]):
            dv = rc[targets]
            dv.push({"h": arr}, block=True)
            assert dv.apply_sync(engine_mapped, "h") == [False] * len(targets)
            assert all(np.array_equal(v, arr) for v in dv.pull("h", block=True))
        back = rc[foreign].pull("h", block=True)
        assert not mapped(back)
        np.testing.assert_array_equal(back, arr)
        made = rc[foreign].apply_sync(make_array, BIG * 3)
        assert not mapped(made) and made.shape == (BIG, 3)
        # the local engine alone still uses shared memory
        rc[local[0]].push({"h": arr}, block=True)
        assert rc[local[0]].apply_sync(engine_mapped, "h")
        lview = rc.load_balanced_view()
        assert not lview.apply_sync(arg_info, arr)[3]  # some engine may be elsewhere: no shm
        # A client that believes every engine is local (the foreign one registered after it
        # decided): the load balancer gives its shared-memory tasks to local engines only.
        rc._engines[foreign]["host_key"] = rc._shm_key
        ars = [lview.apply_async(slow_mapped, arr) for _ in range(8)]
        assert all(ar.get(timeout=60) for ar in ars)
        assert {ar.engine_id for ar in ars} <= set(local)
        with pytest.raises(hpcpar.ImpossibleDependency, match="shared memory"):
            rc.load_balanced_view(targets=[foreign]).apply_sync(arg_info, arr)
        assert wait_no_files(rc) == []
    finally:
        proc.kill()
        proc.wait(10)


def test_stop_removes_leftover_files(hpcpar_dir):
    profile = f"shmstop-{os.getpid()}"
    subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", "1", "--daemonize", "--wait"),
                   check=True, timeout=120, capture_output=True)
    rc = hpcpar.Client(profile=profile, timeout=30)
    prefix = rc._shm_prefix
    rc.close()
    # What a client killed with SIGKILL would leave behind.
    leftover = sharedmem.SHM_DIR / (prefix + "ab" * 16)
    leftover.write_bytes(b"x" * 10)
    unrelated = sharedmem.SHM_DIR / ("hpcpar-unrelated-" + "cd" * 16)
    unrelated.write_bytes(b"y")
    try:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), check=True, timeout=60, capture_output=True)
        assert not leftover.exists()
        assert unrelated.exists()
    finally:
        leftover.unlink(missing_ok=True)
        unrelated.unlink(missing_ok=True)


def test_client_killed_hard_leaves_nothing_after_stop(private_cluster, tmp_path):
    cluster, rc = private_cluster
    script = tmp_path / "client.py"
    script.write_text(
        "import os, sys, numpy as np, hpcpar\n"
        f"rc = hpcpar.Client(profile_dir={str(cluster.profile_dir.path)!r}, timeout=30)\n"
        "rc[rc.ids[0]].execute('import time; time.sleep(2)', block=False)\n"
        f"rc[rc.ids[0]].push({{'z': np.ones({BIG})}}, block=False)\n"
        "print(len([f for f in os.listdir('/dev/shm') if f.startswith(rc._shm_prefix)]), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1"
    assert len(shm_files(rc)) == 1  # nobody is left to remove it but the cluster
    cluster.stop_cluster_sync()
    assert shm_files(rc) == []


def test_names_are_validated():
    prefix = sharedmem.cluster_prefix("abc", b"k" * 32)
    assert prefix.startswith("hpcpar-abc-")
    assert prefix != sharedmem.cluster_prefix("abc", b"j" * 32)
    with pytest.raises(sharedmem.SharedMemoryError, match="not a file of this cluster"):
        sharedmem.attach([], [[0, prefix + "g" * 32, 10]], prefix)
    with pytest.raises(sharedmem.SharedMemoryError, match="is gone"):
        sharedmem.attach([], [[0, prefix + "2" * 32, 10]], prefix, remove=True)
    with pytest.raises(sharedmem.SharedMemoryError, match="bad buffer index"):
        path = Path(sharedmem.SHM_DIR / (prefix + "1" * 32))
        path.write_bytes(b"z" * 10)
        try:
            sharedmem.attach([], [[5, path.name, 10]], prefix)
        finally:
            path.unlink()


def slow_big(n: int):
    time.sleep(2.0)
    return make_array(n)


def _pending_at_hub(client, msg_id: str) -> bool:
    try:
        return msg_id in client.result_status([msg_id])["pending"]
    except KeyError:  # the hub has no record of it yet (result_status raises for unknown ids)
        return False


def test_shm_result_reaches_its_client_and_another_client_is_told_why(rc, cluster):
    rc2 = hpcpar.Client(profile="shared", timeout=30)
    ar = rc[rc.ids[0]].apply_async(slow_big, BIG * 3)
    msg_id = ar.msg_ids[0]
    try:
        # rc2 talks on its own socket: make sure the controller has taken rc's request first
        deadline = time.monotonic() + 10
        while not _pending_at_hub(rc2, msg_id):
            assert time.monotonic() < deadline, "the controller never reported the task pending"
            time.sleep(0.02)
        watching = rc2.get_result(msg_id, block=False)  # asked while the task runs
        mine = ar.get(timeout=30)
        assert mapped(mine) and mine.shape == (BIG, 3)
        with pytest.raises(sharedmem.SharedMemoryError, match="client that submitted the task"):
            watching.get(timeout=30)
    finally:
        rc2.close()
    # afterwards the hub has no copy (recorded unstored), and says so
    with hpcpar.Client(profile="shared", timeout=30) as rc3, pytest.raises(KeyError, match="shared memory"):
        rc3.get_result(msg_id, block=True).get(timeout=30)
    assert wait_no_files(rc) == []


def test_hub_does_not_store_requests_that_went_through_shared_memory(cluster, monkeypatch):
    monkeypatch.setenv(sharedmem.THRESHOLD_ENV, str(64 << 10))  # 64 kB: well under the store limit
    arr = np.arange(SMALL, dtype=np.float64)  # 800 kB: storable by size
    with hpcpar.Client(profile="shared", timeout=30) as rc, \
            hpcpar.Client(profile="shared", timeout=30, shared_memory=False) as plain:
        through_shm = rc[0].push({"r": arr}, block=False)
        through_shm.get(timeout=30)
        assert rc[0].apply_sync(engine_mapped, "r")
        through_controller = plain[0].push({"r": arr}, block=False)
        through_controller.get(timeout=30)
        time.sleep(0.3)  # the hub's store thread commits every 50 ms
        assert plain.resubmit(through_controller.msg_ids).get(timeout=30) == [None]
        with pytest.raises(KeyError, match="no stored request"):
            rc.resubmit(through_shm.msg_ids)
        assert wait_no_files(rc) == []


def test_controller_removes_leftovers_when_it_exits(private_cluster):
    cluster, rc = private_cluster
    leftover = sharedmem.SHM_DIR / (rc._shm_prefix + "ef" * 16)  # as a killed engine would leave
    leftover.write_bytes(b"x")
    try:
        rc.shutdown(hub=True)
        assert wait_no_files(rc, timeout=20) == []
    finally:
        leftover.unlink(missing_ok=True)


def test_resubmit_from_another_host_gets_the_result_through_the_controller(rc, monkeypatch):
    ar = rc[rc.ids[0]].apply_async(make_array, BIG * 3)
    assert mapped(ar.get(timeout=30))
    time.sleep(0.3)  # the hub's store thread commits every 50 ms
    monkeypatch.setenv(sharedmem.HOST_KEY_ENV, "a-laptop")
    with hpcpar.Client(profile="shared", timeout=30) as remote:
        again = remote.resubmit(ar.msg_ids).get(timeout=30)
        made = again[0] if isinstance(again, list) else again
        assert not mapped(made) and made.shape == (BIG, 3)
        np.testing.assert_array_equal(made, np.arange(BIG * 3, dtype=np.float64).reshape(-1, 3))
    assert wait_no_files(rc) == []
