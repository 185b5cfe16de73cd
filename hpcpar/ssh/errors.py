"""SSH failures, each with a message that says what to do about it."""

from __future__ import annotations

from ..error import HpcparError


class SSHError(HpcparError):
    """An SSH connection or remote command failed."""


class UnknownHostKey(SSHError):
    """The server's host key is not in known_hosts (or does not match it)."""


class SSHAuthError(SSHError):
    """The server refused every key / password offered."""


class RemoteNotFound(SSHError):
    """The remote profile, or a cluster in it, does not exist."""


class ControllerNotRunning(SSHError):
    """A connection file exists, but no controller answers at its addresses."""


def host_key_commands(server: str) -> tuple[str, str]:
    """``ssh`` and ``ssh-keyscan`` command lines OpenSSH accepts for ``[user@]host[:port]``
    (OpenSSH takes the port as -p, never as host:port)."""
    import shlex

    from .target import SSHTarget

    try:
        t = SSHTarget.parse(server)
    except ValueError:
        return f"ssh {shlex.quote(server)}", f"ssh-keyscan {shlex.quote(server)}"
    port = f"-p {t.port} " if t.port else ""
    login = f"{t.user}@{t.host}" if t.user else t.host
    return f"ssh {port}{shlex.quote(login)}", f"ssh-keyscan {port}{shlex.quote(t.host)}"


def classify(server: str, stderr: str, *, key: str | None = None, what: str = "connect") -> SSHError:
    """An :class:`SSHError` subclass for OpenSSH's stderr text."""
    text = stderr.strip()
    low = text.lower()
    tail = f" (ssh said: {text.splitlines()[-1]})" if text else ""
    if "host key verification failed" in low or "remote host identification has changed" in low \
            or "no matching host key" in low or "host key for" in low and "not known" in low:
        login, scan = host_key_commands(server)
        return UnknownHostKey(
            f"the host key of {server} is not known (or has changed){tail}. Log in once with "
            f"'{login}' and accept the key, or add it with '{scan} >> ~/.ssh/known_hosts' "
            "after checking its fingerprint with your site"
        )
    if "permission denied" in low or "too many authentication failures" in low:
        which = f"the key {key}" if key else "your keys (ssh-agent, ~/.ssh/id_*, IdentityFile)"
        return SSHAuthError(
            f"{server} refused {which}{tail}. Pass the right key with sshkey=/--key, "
            f"install your public key there ('ssh-copy-id{host_key_commands(server)[0][3:]}'), or, for passwords and "
            "one-time codes, log in once with a ControlMaster connection (ControlMaster auto + "
            "ControlPersist in ~/.ssh/config), which hpcpar then reuses"
        )
    if "could not resolve hostname" in low or "connection refused" in low or "timed out" in low \
            or "no route to host" in low or "network is unreachable" in low:
        return SSHError(f"cannot reach {server}{tail}; check the host name, port and your network/VPN")
    return SSHError(f"ssh to {server} failed to {what}{tail or ' (no message)'}")
