"""What both Python transcript scripts share: numbered steps under a watchdog, flushed output
lines, and server-generated lease ids printed as L1, L2, ... in the order they are first seen.

A step that takes longer than STEP_TIMEOUT seconds ends the process with exit code 3 and a line
saying which step hung.
"""

import os
import threading
import time

STEP_TIMEOUT = 20.0

_step = {"name": "start", "deadline": time.monotonic() + STEP_TIMEOUT}
_lease_names = {}


def _watchdog():
    while True:
        time.sleep(0.2)
        if time.monotonic() > _step["deadline"]:
            print(f"TIMEOUT in step {_step['name']} after {STEP_TIMEOUT}s", flush=True)
            os._exit(3)


def start_watchdog():
    threading.Thread(target=_watchdog, daemon=True).start()


def step(name):
    _step["name"] = name
    _step["deadline"] = time.monotonic() + STEP_TIMEOUT
    print(f"## {name}", flush=True)


def out(line):
    print(line, flush=True)


def lease_name(lease_id):
    lease_id = int(lease_id)
    if lease_id == 0:
        return "0"
    if lease_id not in _lease_names:
        _lease_names[lease_id] = f"L{len(_lease_names) + 1}"
    return _lease_names[lease_id]


def s(b):
    return b.decode() if isinstance(b, bytes) else str(b)
