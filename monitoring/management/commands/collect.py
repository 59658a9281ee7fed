"""``manage.py collect``: sample this machine (or a capture) into normalised snapshots.

``--once --json`` prints one snapshot; ``--from-file`` normalises a saved nvidia-smi XML,
``--query-gpu`` CSV, NVML capture or ``nvtop -s`` JSON; ``--replay DIR`` plays a capture
directory as if it were live. Without ``--once`` it keeps sampling on a steady clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.telemetry import serialize
from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.schema import Snapshot, SystemSample
from monitoring.telemetry.select import CHOICES
from monitoring.telemetry.summary import summary_lines

# Rates and CPU % need two readings; --once primes, waits this long, then samples.
ONCE_PRIMING_S = 0.25


class Command(BaseCommand):
    help = "Sample GPUs and the host into normalised snapshots."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="take one snapshot and exit")
        parser.add_argument("--json", action="store_true", help="print JSON (camelCase keys)")
        parser.add_argument(
            "--from-file",
            metavar="FILE",
            help="normalise a saved nvidia-smi -q -x XML, --query-gpu CSV, NVML capture or nvtop -s JSON",
        )
        parser.add_argument("--replay", metavar="DIR", help="play a capture directory as if live")
        parser.add_argument("--state", choices=("idle", "load"), help="replay only this state")
        parser.add_argument(
            "--source", choices=CHOICES, help="GPU source (default: HOOFHEARTED_GPU_SOURCE or auto)"
        )
        parser.add_argument(
            "--interval-ms", type=int, help="sampling interval (default: POLL_INTERVAL_MS)"
        )
        parser.add_argument("--count", type=int, default=0, help="stop after this many snapshots")

    def handle(self, *args, **options) -> None:
        if options["from_file"]:
            self._print(self._from_file(Path(options["from_file"])), options["json"])
            return
        interval_ms = options["interval_ms"] or settings.POLL_INTERVAL_MS
        if interval_ms < 250:
            raise CommandError(f"--interval-ms={interval_ms} is below the minimum of 250")
        choice = "replay" if options["replay"] else (options["source"] or settings.GPU_SOURCE)
        replay_dir = options["replay"] or settings.REPLAY_DIR or None
        if replay_dir and not Path(replay_dir).is_dir():
            raise CommandError(f"--replay {replay_dir}: no such directory")
        sampler = build_sampler(
            choice,
            nvidia_smi=settings.NVIDIA_SMI,
            nvtop=settings.NVTOP,
            interval_ms=interval_ms,
            replay_dir=replay_dir,
            replay_state=options["state"]
            or (settings.REPLAY_STATE if choice == "replay" else None),
            hostname=settings.HOST_NAME,
        )
        try:
            if options["once"]:
                sampler.host_sampler.sample(top_processes=True, slow=True)  # prime the rates
                time.sleep(ONCE_PRIMING_S)
                self._print(sampler.sample(), options["json"])
                return
            self._loop(sampler, interval_ms / 1000, options["count"], options["json"])
        finally:
            sampler.close()

    def _loop(self, sampler, interval_s: float, count: int, as_json: bool) -> None:
        """Print snapshots on a steady clock until interrupted (the worker will store them)."""
        next_tick = time.monotonic()
        taken = 0
        try:
            while not count or taken < count:
                self._print(sampler.sample(), as_json)
                taken += 1
                next_tick += interval_s
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:  # a tick overran: skip ahead rather than burst to catch up
                    next_tick = time.monotonic()
        except KeyboardInterrupt:
            pass

    def _from_file(self, path: Path) -> Snapshot:
        try:
            reading = read_capture_file(path)
        except ParseError as exc:
            raise CommandError(str(exc), returncode=2) from None
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}", returncode=2) from None
        from monitoring.telemetry.host import read_host_info

        system = SystemSample(
            unsupported={"system": f"host not sampled: GPUs read from {path.name}"}
        )
        return Snapshot(
            timestamp=datetime.now(UTC),
            host=read_host_info(),
            driver=reading.driver,
            gpus=reading.gpus,
            system=system,
            messages=reading.messages,
        )

    def _print(self, snapshot: Snapshot, as_json: bool) -> None:
        if as_json:
            self.stdout.write(serialize.to_json(snapshot, indent=2))
        else:
            self.stdout.write("\n".join(summary_lines(snapshot)))
        self.stdout.flush()
