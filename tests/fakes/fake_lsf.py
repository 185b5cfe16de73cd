"""Test double for IBM LSF's bsub, bjobs and bkill.

bsub reads the script on stdin (as hpcpar sends it), parses its #BSUB header the way LSF
does (only the comment block before the first command), rejects what LSF rejects (unknown
options, seconds in -W, bad -n/-M, unknown queues, arrays above MAX_JOB_ARRAY_SIZE, an
unquoted or malformed -J array, unbalanced -R), then runs each task locally with
LSB_JOBID / LSB_JOBINDEX set. Given a file argument instead, it behaves like LSF without
LSB_BSUB_PARSE_SCRIPT=Y: the file runs as a plain command and its #BSUB lines are ignored.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fakelib  # noqa: E402

WITH_VALUE = {"-J", "-q", "-P", "-W", "-n", "-R", "-M", "-o", "-e", "-oo", "-eo", "-G", "-cwd",
              "-env", "-m", "-U", "-gpu", "-nnodes", "-w", "-We", "-app", "-sla", "-u"}
FLAGS = {"-x", "-B", "-N", "-r", "-rn", "-K"}
MAX_JOB_ARRAY_SIZE = 1000
STATES = {"pending": "PEND", "running": "RUN", "done": "DONE", "failed": "EXIT", "killed": "EXIT"}


def fail(message: str, rc: int = 255) -> int:
    print(message, file=sys.stderr)
    return rc


def parse_header(text: str) -> list[list[str]]:
    directives = []
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break  # LSF stops at the first command line
        if line.startswith("#BSUB"):
            directives.append(shlex.split(line[len("#BSUB"):]))
        elif stripped.startswith("#BSUB"):
            raise ValueError(f"indented directive is not read by LSF: {line!r}")
    return directives


def bsub(args: list[str]) -> int:
    if args == ["-V"]:  # as LSF: the version on stderr, nothing submitted
        print("IBM Spectrum LSF Standard 10.1.0.13, Jun 01 2022 (hpcpar test double)", file=sys.stderr)
        return 0
    if os.environ.get("HPCPAR_FAKE_BANNER"):
        print("esub: site policy checked, have a nice day")
    if args:
        script, options = " ".join(args), {}
        text = ""
    else:
        text = sys.stdin.read()
        if not text.startswith("#!"):
            return fail("fake bsub: script on stdin has no #! line")
        try:
            directives = parse_header(text)
        except ValueError as e:
            return fail(f"fake bsub: {e}")
        options: dict[str, str] = {}
        for words in directives:
            i = 0
            while i < len(words):
                flag = words[i]
                if flag in FLAGS:
                    options[flag] = ""
                    i += 1
                elif flag in WITH_VALUE:
                    if i + 1 >= len(words):
                        return fail(f"bsub: option requires an argument -- {flag[1:]}")
                    options[flag] = words[i + 1]
                    i += 2
                else:
                    return fail(f"bsub: illegal option -- {flag.lstrip('-')}\nJob not submitted.")
    if "-W" in options and not re.fullmatch(r"(\d+:)?\d+", options["-W"]):
        return fail(f"{options['-W']}: Bad RUNLIMIT specification. Job not submitted.")
    for flag in ("-n", "-M"):
        if flag in options and not re.fullmatch(r"[1-9]\d*", options[flag]):
            return fail(f"{options[flag]}: Bad argument for {flag}. Job not submitted.")
    queues = os.environ.get("HPCPAR_FAKE_LSF_QUEUES", "normal,short").split(",")
    if "-q" in options and options["-q"] not in queues:
        return fail(f"{options['-q']}: No such queue. Job not submitted.")
    if "-R" in options and options["-R"].count("[") != options["-R"].count("]"):
        return fail(f"{options['-R']}: Bad resource requirement syntax. Job not submitted.")
    name, indices = options.get("-J", "NONAME"), [0]
    if "[" in name:
        m = re.fullmatch(r"([^\[\]]+)\[(\d+)-(\d+)\](%\d+)?", name)
        if not m or int(m.group(2)) < 1 or int(m.group(3)) < int(m.group(2)):
            return fail(f"{name}: Bad job name. Job not submitted.")
        if int(m.group(3)) - int(m.group(2)) + 1 > MAX_JOB_ARRAY_SIZE:
            return fail("The job array size exceeds MAX_JOB_ARRAY_SIZE. Job not submitted.")
        name, indices = m.group(1), list(range(int(m.group(2)), int(m.group(3)) + 1))
    job_id = str(fakelib.next_id("lsf"))
    path = fakelib.store("lsf") / job_id
    fakelib.save_job(path, {"name": name, "indices": indices, "options": options})
    if text:
        (path / "script").write_text(text)
        os.chmod(path / "script", 0o700)
        argv = [str(path / "script")]
    else:
        argv = ["/bin/sh", "-c", script]
    cwd = options.get("-cwd", os.getcwd())
    for index in indices:
        out = options.get("-o", options.get("-oo", str(path / f"{index}.out")))
        out = out.replace("%J", job_id).replace("%I", str(index))
        env = {"LSB_JOBID": job_id, "LSB_JOBINDEX": str(index), "LSB_JOBNAME": name}
        fakelib.spawn_task(path, index, argv, env, out, cwd)
    where = f"queue <{options['-q']}>" if "-q" in options else "default queue <normal>"
    print(f"Job <{job_id}> is submitted to {where}.")
    return 0


def bjobs(args: list[str]) -> int:
    ids, fields, i = [], None, 0
    while i < len(args):
        if args[i] == "-o":
            fields, i = args[i + 1], i + 2
        elif args[i] in ("-a", "-noheader", "-w"):
            i += 1
        elif args[i].startswith("-"):
            return fail(f"bjobs: illegal option -- {args[i]}", 255)
        else:
            ids.append(args[i])
            i += 1
    if fields is not None and fields.split() != ["jobid", "stat"]:
        return fail(f"fake bjobs supports only -o \"jobid stat\", not {fields!r}", 2)
    rc = 0
    for job_id in ids:
        path = fakelib.job_dir("lsf", job_id)
        if path is None:
            print(f"Job <{job_id}> is not found", file=sys.stderr)
            rc = 255
            continue
        for index in fakelib.load_job(path)["indices"]:
            print(f"{job_id} {STATES[fakelib.task_state(path, index)]}")
    return rc


def bkill(args: list[str]) -> int:
    rc = 0
    for job_id in args:
        path = fakelib.job_dir("lsf", job_id)
        if path is None:
            print(f"Job <{job_id}>: No matching job found", file=sys.stderr)
            rc = 255
            continue
        killed = [fakelib.kill_task(path, i) for i in fakelib.load_job(path)["indices"]]
        if any(killed):
            print(f"Job <{job_id}> is being terminated")
        else:
            print(f"Job <{job_id}>: Job has already finished", file=sys.stderr)
            rc = 255
    return rc


if __name__ == "__main__":
    command = sys.argv[1]
    sys.exit({"bsub": bsub, "bjobs": bjobs, "bkill": bkill}[command](sys.argv[2:]))
