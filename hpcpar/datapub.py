"""``publish_data``: a running task sends data to its client while it runs (ipyparallel's
``ipyparallel.datapub``). The client merges each dict into the task's ``ar.data``.

The data travels with the task's rich outputs (engine/display.py), pickled, in an
output of its own type that the client takes out of ``outputs`` (``take_data``).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

OUTPUT_TYPE = "hpcpar_data"
MIME = "application/x-hpcpar-data+pickle"
log = logging.getLogger("hpcpar.datapub")


def publish_data(data: dict[str, Any]) -> None:
    """On an engine, inside a task: update the task's ``ar.data`` on the client with ``data``
    (a dict of picklable values); later calls update the same dict."""
    if not isinstance(data, dict):
        raise TypeError(f"publish_data takes a dict, like {{'progress': 0.5}}, not {type(data).__name__}")
    import cloudpickle

    from .engine import display

    collector = display._current
    if collector is None:
        raise RuntimeError("publish_data works inside a task running on an engine (apply, map, execute)")
    payload = cloudpickle.dumps(data, protocol=5)  # one in-band blob: it rides in a JSON message
    collector.add({"output_type": OUTPUT_TYPE, "data": {MIME: base64.b64encode(bytes(payload)).decode()},
                   "metadata": {}})


def is_data(output: Any) -> bool:
    return isinstance(output, dict) and output.get("output_type") == OUTPUT_TYPE


def take_data(outputs: list[Any], data: dict[str, Any]) -> list[Any]:
    """The outputs without the published data, which is merged into ``data`` in order."""
    if not any(is_data(o) for o in outputs):
        return outputs
    from . import serialize

    kept = []
    for out in outputs:
        if not is_data(out):
            kept.append(out)
            continue
        try:
            data.update(serialize.loads(base64.b64decode(out["data"][MIME])))
        except Exception as e:  # a value that cannot be unpickled here: say so in its place
            log.warning("published data could not be read: %s", e)
            data["publish_data error"] = f"{type(e).__name__}: {e}"
    return kept
