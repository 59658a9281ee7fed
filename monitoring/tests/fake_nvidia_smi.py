#!/usr/bin/env python3
"""Test double for ``nvidia-smi -q -x -lms N``: replays real capture XML on a loop.

Lets the nvidia-smi source be tested as a real child process on a machine without a GPU.
Environment switches:

- ``FAKE_SMI_XML``: capture file(s) to print, separated by ``os.pathsep``; several files
  alternate (idle, load, idle …). Defaults to the H100 idle capture.
- ``FAKE_SMI_MODE``: ``ok`` (default); ``no-driver`` prints NVIDIA's real failure message
  and exits 9, as nvidia-smi does without a loaded driver; ``hang`` prints nothing, ever.
- ``FAKE_SMI_DIE_AFTER=K``: exit with code 1 after K documents.
- ``FAKE_SMI_HANG_AFTER=K``: after K documents print half a document and stop talking.
- ``FAKE_SMI_IGNORE_TERM=1``: ignore SIGTERM (only SIGKILL ends it).
- ``FAKE_SMI_SAY=FILE``: print FILE's bytes (nvidia-smi's own error lines, say) before each
  document; with ``FAKE_SMI_MODE=say`` print them once and exit 255, as nvidia-smi does when
  it can read no GPU at all.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
DEFAULT_XML = Path(__file__).resolve().parents[1] / "captures/nvidia/h100/smi_qx_idle.xml"


def _interval_ms(argv: list[str]) -> int:
    if "-q" not in argv or "-x" not in argv or "-lms" not in argv:
        print(f"fake nvidia-smi: expected -q -x -lms N, got {argv}", file=sys.stderr)
        sys.exit(2)
    return int(argv[argv.index("-lms") + 1])


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    interval = _interval_ms(sys.argv[1:]) / 1000.0
    if os.environ.get("FAKE_SMI_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mode = os.environ.get("FAKE_SMI_MODE", "ok")
    say = Path(os.environ["FAKE_SMI_SAY"]).read_bytes() if "FAKE_SMI_SAY" in os.environ else b""
    if mode == "say":
        sys.stdout.buffer.write(say)
        sys.stdout.flush()
        sys.exit(255)
    if mode == "no-driver":
        print(NO_DRIVER, flush=True)
        sys.exit(9)
    if mode == "hang":
        _sleep_forever()
    paths = os.environ.get("FAKE_SMI_XML", str(DEFAULT_XML)).split(os.pathsep)
    documents = [Path(path).read_bytes() for path in paths]
    die_after = int(os.environ.get("FAKE_SMI_DIE_AFTER", "0"))
    hang_after = int(os.environ.get("FAKE_SMI_HANG_AFTER", "0"))
    out = sys.stdout.buffer  # bytes as they are: a document need not be UTF-8
    count = 0
    while True:
        if hang_after and count >= hang_after:
            doc = documents[count % len(documents)]
            out.write(doc[: len(doc) // 2])
            out.flush()
            _sleep_forever()
        out.write(say)
        out.write(documents[count % len(documents)])
        out.write(b"\n")
        out.flush()
        count += 1
        if die_after and count >= die_after:
            sys.exit(1)
        time.sleep(interval)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(0)
