"""Reading a cluster's connection file on a remote host, over an open SSH session.

Only a POSIX shell is needed on the remote side (no Python, no hpcpar): the
profile directory is resolved there (``$HPCPAR_DIR`` or ``~/.hpcpar``), so the
remote user's own settings apply.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..connection import ConnectionFileError, ConnectionInfo
from ..paths import DEFAULT_PROFILE, check_profile_name
from .errors import RemoteNotFound, SSHError
from .session import Session

MARK = "HPCPAR-"


def remote_profile_expr(profile: str | None = None, profile_dir: str | None = None) -> str:
    """A shell word naming the remote profile directory (expanded on the remote side)."""
    if profile_dir:
        text = str(profile_dir)
        if text.startswith("~/"):
            return '"$HOME"/' + shlex.quote(text[2:])
        return shlex.quote(text)
    name = check_profile_name(profile or DEFAULT_PROFILE)
    return '"${HPCPAR_DIR:-$HOME/.hpcpar}"/' + shlex.quote(f"profile_{name}")


def _fetch_script(profile_expr: str, cluster_id: str | None) -> str:
    if cluster_id:
        pick = f'f="$d/security/hpcpar-"{shlex.quote(cluster_id)}"-client.json"'
    elif cluster_id is None:
        # No id given: the default file, or the only cluster of the profile.
        pick = (
            'f="$d/security/hpcpar-client.json"\n'
            'if [ ! -f "$f" ]; then\n'
            '  n=0; for g in "$d"/security/hpcpar-*-client.json; do [ -f "$g" ] && { n=$((n+1)); one=$g; }; done\n'
            '  [ "$n" = 1 ] && f=$one\n'
            'fi'
        )
    else:
        pick = 'f="$d/security/hpcpar-client.json"'
    return f"""d={profile_expr}
echo "{MARK}HOST $(hostname 2>/dev/null || uname -n)"
echo "{MARK}DIR $d"
if [ ! -d "$d" ]; then echo "{MARK}NOPROFILE"; exit 0; fi
for g in "$d"/security/hpcpar*-client.json; do [ -f "$g" ] && echo "{MARK}HAVE $g"; done
{pick}
if [ ! -f "$f" ]; then echo "{MARK}NOCLUSTER $f"; exit 0; fi
echo "{MARK}FILE $f"
cat "$f"
echo
echo "{MARK}END"
pid=$(sed -n 's/.*"controller_pid": *\\([0-9][0-9]*\\).*/\\1/p' "$f")
if [ -n "$pid" ]; then
  if [ -r /proc/$pid/stat ] || kill -0 "$pid" 2>/dev/null; then echo "{MARK}PID $pid alive"
  else echo "{MARK}PID $pid dead"; fi
fi
"""


@dataclass
class RemoteConnection:
    info: ConnectionInfo
    path: str  # the file on the remote host
    host: str  # the remote `hostname`
    pid_alive: bool | None  # None: unknown (no pid, or the controller is on another host)


def fetch_client_info(
    session: Session,
    *,
    profile: str | None = None,
    profile_dir: str | None = None,
    cluster_id: str | None = None,
    timeout: float = 30.0,
) -> RemoteConnection:
    """The remote cluster's client connection file, or RemoteNotFound saying what exists."""
    expr = remote_profile_expr(profile, profile_dir)
    r = session.run("sh -s", stdin=_fetch_script(expr, cluster_id), timeout=timeout)
    lines = r.stdout.splitlines()
    tags = {}
    have: list[str] = []
    body: list[str] = []
    in_body = False
    for line in lines:
        if in_body:
            if line == f"{MARK}END":
                in_body = False
            else:
                body.append(line)
            continue
        if line.startswith(f"{MARK}FILE "):
            in_body = True
        if line.startswith(MARK):
            tag, _, rest = line[len(MARK):].partition(" ")
            if tag == "HAVE":
                have.append(rest)
            tags[tag] = rest
    server = session.description
    what = f"profile directory {profile_dir}" if profile_dir else f"profile {profile or DEFAULT_PROFILE!r}"
    if "DIR" not in tags:
        raise SSHError(f"could not read the {what} on {server}: the remote shell failed "
                       f"(rc {r.rc}): {r.stderr.strip() or r.stdout.strip() or 'no output'}")
    flag = f"--profile-dir {profile_dir}" if profile_dir else f"--profile {profile or DEFAULT_PROFILE}"
    if "NOPROFILE" in tags:
        raise RemoteNotFound(
            f"{what} does not exist on {server} ({tags['DIR']}): start a cluster there with "
            f"'hpcpar start {flag}' (or 'hpcpar start {flag} --on {server}' from here), or name "
            "the right profile (profile=/--profile, profile_dir=/--remote-profile-dir)"
        )
    if "NOCLUSTER" in tags:
        if have:
            ids = [h.rsplit("/", 1)[-1][len("hpcpar"):-len("-client.json")].lstrip("-") or "''" for h in have]
            hint = f"clusters there have ids: {', '.join(ids)}; pass cluster_id=/--cluster-id"
        else:
            hint = f"start one with 'hpcpar start {flag}' on {server}"
        raise RemoteNotFound(f"no cluster is running in {what} on {server} "
                             f"(no {tags['NOCLUSTER']}): {hint}")
    path = tags.get("FILE", "?")
    try:
        info = ConnectionInfo.from_dict(json.loads("\n".join(body)), f"{server}:{path}")
    except (ValueError, ConnectionFileError) as e:
        raise SSHError(f"the connection file {path} on {server} is not readable: {e}") from None
    alive = None
    if "PID" in tags and info.location in ("", tags.get("HOST")):
        alive = tags["PID"].endswith("alive")
    return RemoteConnection(info, path, tags.get("HOST", ""), alive)
