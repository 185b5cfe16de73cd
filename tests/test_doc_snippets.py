"""Every code block of README.md and docs/*.md runs as written on this machine, or is marked
as output or as needing a system the machine lacks (the convention: docs/README.md).

Each page runs in a fresh $HPCPAR_DIR with an empty site config and none of this
machine's HPCPAR_* settings, as a new user's shell would: its shell commands in order
(from the repository root), its Python blocks in one IPython session, with a local
cluster of 4 engines in the default profile started before the first Python block
(unless the block starts its own). A command that runs in the foreground until Ctrl-C
(it says "Ctrl-C" stops it) gets a SIGINT once it said so. Python blocks find `rc`, a client
of that cluster, defined.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from doc_snippets import MISSING_SYSTEMS, PAGES, ROOT, Block, all_blocks, blocks

COMMAND_TIMEOUT = 180.0

# The Python session of a page: reads one JSON request per line, answers one JSON line.
DRIVER = textwrap.dedent('''
    import ast, asyncio, json, sys, traceback
    try:
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance(colors="NoColor")
    except ImportError:
        shell = None
    ns = {"__name__": "__main__"}
    for line in sys.stdin:
        req = json.loads(line)
        ok, err = True, ""
        try:
            if shell is not None:
                r = shell.run_cell(req["code"], store_history=False)
                if not r.success:
                    ok, err = False, repr(r.error_before_exec or r.error_in_exec)
            else:
                code = compile(req["code"], req["where"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                result = eval(code, ns)
                if asyncio.iscoroutine(result):
                    asyncio.run(result)
        except BaseException:
            ok, err = False, traceback.format_exc()
        sys.stdout.flush()
        print("\\n@@DOC@@" + json.dumps({"ok": ok, "error": err}), flush=True)
''')


def page_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCPAR_")}
    site = home / "site"
    site.mkdir(parents=True, exist_ok=True)
    env.update(HPCPAR_DIR=str(home / "hpcpar"), HPCPAR_SITE_CONFIG=str(site),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


# Commands that change this machine or run for long: such a block must be marked instead
# (needs install / needs benchmark), never run by the test.
UNSAFE = re.compile(r"\b(pip3?|apt-get|apt)\s+install\b|\bci/\w+\.sh\b|\bbenchmarks/|\bexamples/demo\.sh\b")


def run_command(command: str, env: dict[str, str], where: str, fails: bool) -> str:
    import threading

    if UNSAFE.search(command):
        pytest.fail(f"{where}: `{command}` installs software or runs a benchmark: mark the block "
                    "<!-- doc-test: needs install --> or <!-- doc-test: needs benchmark --> (docs/README.md)")

    proc = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline, interrupted = time.monotonic() + COMMAND_TIMEOUT, False
    while proc.poll() is None and time.monotonic() < deadline:
        if not interrupted and any("Ctrl-C" in line for line in list(out)):
            proc.send_signal(signal.SIGINT)  # a foreground command: the reader would press Ctrl-C
            interrupted = True
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        pytest.fail(f"{where}: `{command}` did not finish in {COMMAND_TIMEOUT:g} s:\n{''.join(out)[-3000:]}")
    reader.join(10)
    text = "".join(out)
    assert "Traceback (most recent call last)" not in text, f"{where}: `{command}`:\n{text[-3000:]}"
    if fails:
        assert proc.returncode not in (0, 130), f"{where}: `{command}` should fail:\n{text[-3000:]}"
    else:
        ok = (0, 130) if interrupted else (0,)
        assert proc.returncode in ok, f"{where}: `{command}` exited {proc.returncode}:\n{text[-3000:]}"
    return text


class PythonSession:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def run(self, code: str, where: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"code": code, "where": where}) + "\n")
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.startswith("@@DOC@@"):
                answer = json.loads(line[len("@@DOC@@"):])
                assert answer["ok"], f"{where}: the block failed:\n{''.join(lines)[-3000:]}\n{answer['error'][-3000:]}"
                return
            lines.append(line)
        pytest.fail(f"{where}: the Python session ended:\n{''.join(lines)[-3000:]}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def ensure_cluster(env: dict[str, str], block: Block, profile: str) -> None:
    """A local cluster of 4 engines in ``profile`` (started unless one runs there)."""
    listed = run_command(f"hpcpar list --json --profile {profile}", env, block.where, fails=False)
    if not json.loads(listed):
        run_command(f"hpcpar start --profile {profile} -n 4 --daemonize --wait --timeout 120", env,
                    block.where, fails=False)


def check_toml(block: Block) -> None:
    from hpcpar.config import toml
    from hpcpar.config.validate import validate_table

    data = toml.loads(block.text)
    _, problems = validate_table(data, block.where, allow_profiles=True)
    assert problems == [], f"{block.where}: {problems}"


def test_every_block_says_what_it_is():
    problems = [p for b in all_blocks() for p in b.problems()]
    assert problems == [], "\n".join(problems)


def test_the_convention_is_documented_where_writers_look():
    text = (ROOT / "docs" / "README.md").read_text()
    for word in ["doc-test: needs", "doc-test: setup:", "doc-test: own-cluster", "doc-test: fails",
                 "```console", "```text", *MISSING_SYSTEMS]:
        assert word in text, word


RUNNABLE = [p for p in PAGES if any(b.runs for b in blocks(p))]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("page", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_page_runs_as_written(page: Path, tmp_path: Path):
    env = page_env(tmp_path)
    session: PythonSession | None = None
    cluster_up = False
    try:
        for block in blocks(page):
            if not block.runs:
                continue
            if block.lang in ("console", "sh") and cluster_up:
                # commands start from a clean state, as the reader's would
                run_command("hpcpar stop --profile default", env, block.where, fails=False)
                cluster_up = False
            if "cluster" in block.marks:
                ensure_cluster(env, block, block.marks["cluster"] or "default")
            if block.lang == "toml":
                check_toml(block)
            elif block.lang in ("console", "sh"):
                for command in block.commands():
                    run_command(command, env, block.where, fails="fails" in block.marks)
            else:
                session = session or PythonSession(env)
                if "own-cluster" in block.marks:
                    run_command("hpcpar stop --all", env, block.where, fails=False)
                    cluster_up = False
                elif not cluster_up:
                    ensure_cluster(env, block, "default")
                    # The page's context (docs/README.md): `rc`, a client of that cluster.
                    session.run("import hpcpar\nrc = hpcpar.Client()\nrc.wait_for_engines(4, timeout=60)\n",
                                block.where + " (the page's client)")
                    cluster_up = True
                if "setup" in block.marks:
                    session.run(block.marks["setup"], block.where + " (setup)")
                session.run(block.python(), block.where)
    finally:
        if session is not None:
            session.close()
        subprocess.run(["bash", "-c", "hpcpar stop --all"], cwd=ROOT, env=env, capture_output=True, timeout=300)
