"""Frames that forwarders add around signed messages (the tree of forwarders, issue #8).

A forwarder relays engine messages without unpickling or re-signing them; it
only adds routing frames, which are outside the signature (like ZeroMQ's own
routing frames), so engine and controller still verify each other end to end.

Upward (towards the controller), each forwarder prefixes what it relays with
``[RELAYED, <identity of the peer below it>]``. The controller reads these
pairs off the front, in order, to learn the path to the engine:

    [fwdA, RELAYED, fwdB, RELAYED, engine, signature, header, ...]

A forwarder may also send ``[BATCHED, counts, part, part, ...]`` upward: the
replies of one broadcast from several engines below it, each part being
``[engine identity, signature, header, meta, payload, *buffers]``.

Downward, a message is plain routing frames, one per hop, then the signed
frames: ``[fwdA, fwdB, engine, signature, ...]``. A broadcast is
``[fwdA, FANOUT, spec, signature, ...]``: forwarder A sends the same frames
to each target named in ``spec`` (JSON: ``{"to": [[hop, ..., engine, msg_id], ...],
"batch": bool}``, paths below A), fanning out again through the forwarders further down;
``batch`` asks it to send the replies up as one BATCHED message. A message
for a forwarder itself (its hello's answer, a shutdown) is ``[fwdA, SELF, signature, ...]``.
"""

from __future__ import annotations

import json
from typing import Any

RELAYED = b"hpcpar-relayed"
BATCHED = b"hpcpar-batched"
FANOUT = b"hpcpar-fanout"
SELF = b"hpcpar-self"
_MARK_LEN = len(RELAYED)


def _b(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def is_mark(frame: Any, mark: bytes) -> bool:
    """Signatures are 32 bytes and identities are never these names, so a length test settles most frames."""
    return len(frame) == len(mark) and _b(frame) == mark


def unwrap(frames: list[Any]) -> tuple[tuple[bytes, ...], list[tuple[bytes, list[Any]]]]:
    """Split a message as received by a ROUTER into (forwarder path, [(sender identity, signed frames)]).

    The path is empty for a peer connected directly; a BATCHED message gives several senders.
    """
    hops = [_b(frames[0])]
    i = 1
    while i + 1 < len(frames) and is_mark(frames[i], RELAYED):
        hops.append(_b(frames[i + 1]))
        i += 2
    if i < len(frames) and is_mark(frames[i], BATCHED):
        try:
            counts = json.loads(_b(frames[i + 1]))
        except (IndexError, ValueError):
            return tuple(hops), []
        parts: list[tuple[bytes, list[Any]]] = []
        j = i + 2
        for n in counts:
            if not isinstance(n, int) or n < 2 or j + n > len(frames):
                break
            parts.append((_b(frames[j]), frames[j + 1:j + n]))
            j += n
        return tuple(hops), parts
    return tuple(hops[:-1]), [(hops[-1], frames[i:])]


def fanout_spec(targets: list[tuple[tuple[bytes, ...], str]], batch: bool) -> bytes:
    """The spec frame of a FANOUT: each target's path below the receiving forwarder, and its msg_id."""
    return json.dumps({"to": [[*(h.decode("latin-1") for h in path), mid] for path, mid in targets],
                       "batch": batch}, separators=(",", ":")).encode()


def read_spec(frame: Any) -> tuple[list[tuple[tuple[bytes, ...], str]], bool]:
    spec = json.loads(_b(frame))
    targets = [(tuple(h.encode("latin-1") for h in entry[:-1]), entry[-1]) for entry in spec["to"]]
    return targets, bool(spec.get("batch"))
