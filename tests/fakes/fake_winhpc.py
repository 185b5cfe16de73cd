"""Test double for Microsoft HPC Pack's ``job`` command: submit, view, cancel.

``job submit /jobfile:F`` validates the job XML the way the scheduler does (namespace,
Job and Task attributes and their types, Priority names, parametric ranges, core
counts) and rejects it otherwise; then each task (each index of a parametric task, with
'*' replaced) runs locally under /bin/sh with its EnvironmentVariables.
"""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fakelib  # noqa: E402

NS = "{http://schemas.microsoft.com/HPCS2008/scheduler/}"
PRIORITIES = {"Lowest", "BelowNormal", "Normal", "AboveNormal", "Highest"}
INT_ATTRS = ("MinCores", "MaxCores", "RuntimeSeconds", "StartValue", "EndValue", "IncrementValue")
BOOL_ATTRS = ("IsExclusive", "IsRerunnable", "IsParametric")


def fail(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    plain, opts = [], {}
    for a in args:
        if a.startswith("/") and ":" in a:
            key, _, value = a[1:].partition(":")
            opts[key.lower()] = value
        else:
            plain.append(a)
    return plain, opts


def check(element: ET.Element, what: str) -> str | None:
    for name in INT_ATTRS:
        if name in element.attrib and not re.fullmatch(r"\d+", element.attrib[name]):
            return f"{what} attribute {name}={element.attrib[name]!r} is not an integer"
    for name in BOOL_ATTRS:
        if name in element.attrib and element.attrib[name] not in ("true", "false"):
            return f"{what} attribute {name}={element.attrib[name]!r} must be true or false"
    lo, hi = element.attrib.get("MinCores"), element.attrib.get("MaxCores")
    if lo and hi and int(lo) > int(hi):
        return f"{what}: MinCores {lo} is greater than MaxCores {hi}"
    return None


def submit(args: list[str]) -> int:
    _, opts = options(args)
    if "jobfile" not in opts:
        return fail("job submit needs /jobfile:<path> (or a job id)")
    try:
        root = ET.parse(opts["jobfile"]).getroot()
    except (OSError, ET.ParseError) as e:
        return fail(f"cannot read job file {opts['jobfile']}: {e}")
    if root.tag != f"{NS}Job":
        return fail(f"the root element must be Job in namespace {NS[1:-1]}, not {root.tag}")
    if root.attrib.get("Version") != "2.000":
        return fail("Job Version must be 2.000")
    if root.attrib.get("Priority", "Normal") not in PRIORITIES:
        return fail(f"unknown Priority {root.attrib.get('Priority')!r}")
    problem = check(root, "Job")
    if problem:
        return fail(problem)
    tasks = root.findall(f"{NS}Tasks/{NS}Task")
    if not tasks:
        return fail("the job has no tasks")
    runs = []
    for task in tasks:
        problem = check(task, "Task")
        if problem:
            return fail(problem)
        command = task.attrib.get("CommandLine", "")
        if not command:
            return fail("a Task has no CommandLine")
        env = {
            v.findtext(f"{NS}Name") or "": v.findtext(f"{NS}Value") or ""
            for v in task.findall(f"{NS}EnvironmentVariables/{NS}Variable")
        }
        if task.attrib.get("IsParametric") == "true":
            try:
                start, end = int(task.attrib["StartValue"]), int(task.attrib["EndValue"])
                step = int(task.attrib.get("IncrementValue", "1"))
            except KeyError as e:
                return fail(f"a parametric Task needs {e.args[0]}")
            if end < start or step < 1:
                return fail(f"parametric range {start}-{end}:{step} is empty")
            indices = list(range(start, end + 1, step))
        else:
            indices = [None]
        for index in indices:
            def sub(text: str, index: int | None = index) -> str:
                return text.replace("*", str(index)) if index is not None else text

            runs.append((sub(command), env, sub(task.attrib.get("StdOutFilePath", "")), task.attrib.get("WorkDirectory", "")))
    job_id = str(fakelib.next_id("winhpc"))
    path = fakelib.store("winhpc") / job_id
    fakelib.save_job(path, {"name": root.attrib.get("Name", ""), "indices": list(range(len(runs)))})
    for i, (command, env, out, cwd) in enumerate(runs):
        out = out or str(path / f"{i}.out")
        env = {**env, "CCP_JOBID": job_id, "CCP_TASKID": str(i + 1)}
        fakelib.spawn_task(path, i, ["/bin/sh", "-c", command], env, out, cwd or os.getcwd())
    print(f"Job has been submitted. ID: {job_id}.")
    return 0


def job_state(path: Path) -> str:
    states = [fakelib.task_state(path, i) for i in fakelib.load_job(path)["indices"]]
    if "killed" in states and not {"running", "pending"} & set(states):
        return "Canceled"
    if "running" in states:
        return "Running"
    if "pending" in states:
        return "Queued"
    return "Failed" if "failed" in states or "killed" in states else "Finished"


def view(args: list[str]) -> int:
    plain, _ = options(args)
    if len(plain) != 1:
        return fail("job view takes one job id")
    path = fakelib.job_dir("winhpc", plain[0])
    if path is None:
        return fail(f"The job {plain[0]} does not exist.")
    info = fakelib.load_job(path)
    print(f"Job ID                : {plain[0]}")
    print(f"Name                  : {info['name']}")
    print(f"State                 : {job_state(path)}")
    return 0


def cancel(args: list[str]) -> int:
    plain, _ = options(args)
    rc = 0
    for job_id in plain:
        path = fakelib.job_dir("winhpc", job_id)
        if path is None:
            rc = fail(f"The job {job_id} does not exist.")
            continue
        killed = [fakelib.kill_task(path, i) for i in fakelib.load_job(path)["indices"]]
        if not any(killed):
            rc = fail(f"The job {job_id} has already finished and cannot be canceled.")
        else:
            print(f"Job {job_id} has been canceled.")
    return rc


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("submit", "view", "cancel"):
        sys.exit(fail("usage: job submit /jobfile:F | job view ID | job cancel ID"))
    sys.exit({"submit": submit, "view": view, "cancel": cancel}[sys.argv[1]](sys.argv[2:]))
