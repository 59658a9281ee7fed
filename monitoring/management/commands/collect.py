"""``manage.py collect``: sample this machine (or a capture) into normalised snapshots.

``--once --json`` prints one snapshot; ``--from-file`` normalises a saved nvidia-smi XML,
``--query-gpu`` CSV, NVML capture or ``nvtop -s`` JSON; ``--replay DIR`` plays a capture
directory as if it were live. Without ``--once`` it runs the collect worker
(:mod:`monitoring.worker.loop`): sampling on a steady clock, storing, alerting and publishing
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.host_names import checked_host_name
from monitoring.telemetry import serialize
from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.schema import Snapshot, SystemSample
from monitoring.telemetry.select import CHOICES, SourceOptions, open_gpu_source
from monitoring.telemetry.summary import SummaryPrinter

# Rates and CPU % need two readings; --once primes, waits this long, then samples.
ONCE_PRIMING_S = 0.25


class Command(BaseCommand):
    help = "Sample GPUs and the host into normalised snapshots."

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._summary = SummaryPrinter()  # notices once per run, then when they change

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="take one snapshot and exit")
        parser.add_argument("--json", action="store_true", help="print JSON (camelCase keys)")
        parser.add_argument(
            "--from-file",
            metavar="FILE",
            help="normalise a saved nvidia-smi -q -x XML, --query-gpu CSV, NVML capture or nvtop -s JSON",
        )
        parser.add_argument("--replay", metavar="DIR", help="play a capture directory as if live")
        parser.add_argument(
            "--state",
            help="replay this state (idle, load), or several in turn (load,idle)",
        )
        parser.add_argument(
            "--switch-s",
            type=float,
            default=30.0,
            help="with several replayed states, seconds of each (default 30)",
        )
        parser.add_argument(
            "--charge-cost",
            action="store_true",
            help="with --replay, spend each NVML call's recorded cost (for benchmarks)",
        )
        parser.add_argument(
            "--source", choices=CHOICES, help="GPU source (default: HOOFHEARTED_GPU_SOURCE or auto)"
        )
        parser.add_argument(
            "--interval-ms", type=int, help="sampling interval (default: POLL_INTERVAL_MS)"
        )
        parser.add_argument("--count", type=int, default=0, help="stop after this many snapshots")
        parser.add_argument(
            "--print",
            action="store_true",
            help="while running, also print each snapshot (a summary, or JSON with --json)",
        )
        parser.add_argument(
            "--host-name", help="name this host is stored under (default: HOOFHEARTED_HOST_NAME)"
        )

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
        state = options["state"] or (settings.REPLAY_STATE if choice == "replay" else None)
        host_name = checked_host_name(options["host_name"] or settings.HOST_NAME)
        source_options = SourceOptions(
            nvidia_smi=settings.NVIDIA_SMI,
            nvtop=settings.NVTOP,
            interval_ms=interval_ms,
            replay_dir=Path(replay_dir) if replay_dir else None,
            replay_state=state,
            replay_switch_s=max(1.0, options["switch_s"]),
            replay_charge_cost=options["charge_cost"],
            counter_interval_ms=settings.COUNTER_INTERVAL_MS,
            pcie_interval_ms=settings.PCIE_INTERVAL_MS,
        )
        if options["once"]:
            sampler = self._sampler(choice, source_options, host_name)
            try:
                sampler.host_sampler.sample(top_processes=True, slow=True)  # prime the rates
                time.sleep(ONCE_PRIMING_S)
                self._print(sampler.sample(), options["json"])
            finally:
                sampler.close()
            return
        code = self._run_worker(choice, source_options, host_name, interval_ms, options)
        if code:
            sys.exit(code)

    def _sampler(self, choice: str, source_options: SourceOptions, host_name: str):
        return build_sampler(
            choice,
            nvidia_smi=source_options.nvidia_smi,
            nvtop=source_options.nvtop,
            interval_ms=source_options.interval_ms,
            replay_dir=source_options.replay_dir,
            replay_state=source_options.replay_state,
            replay_switch_s=source_options.replay_switch_s,
            hostname=host_name,
        )

    def _run_worker(
        self, choice: str, source_options: SourceOptions, host_name: str, interval_ms: int, options
    ) -> int:
        """The long-running worker: schema check, per-host lock, then sample until stopped."""
        from monitoring.storage.writer import SnapshotStore
        from monitoring.worker.lock import LockHeld, WorkerLock
        from monitoring.worker.loop import CollectWorker, WorkerConfig
        from monitoring.worker.setup import alerting_hooks, ensure_schema, maintenance_hook

        ensure_schema()
        lock = WorkerLock(host_name)
        try:
            lock.acquire()
        except LockHeld as exc:
            raise CommandError(str(exc), returncode=1) from None
        sampler = publisher = None
        try:
            sampler = self._sampler(choice, source_options, host_name)
            publisher = self.publisher(host_name)
            if publisher is not None:  # the dashboard asks for PCIe where someone looks
                publisher.listen_for_wants(sampler)
            rules_loader, evaluator_factory = alerting_hooks(host_name)
            as_json = options["json"]
            worker = CollectWorker(
                sampler,
                SnapshotStore(host_name),
                WorkerConfig.from_settings(
                    host_name, interval_ms=interval_ms, count=options["count"]
                ),
                publisher=publisher,
                rules_loader=rules_loader,
                evaluator_factory=evaluator_factory,
                maintenance=maintenance_hook(host_name),
                lock=lock,
                reopen_source=lambda: open_gpu_source(choice, source_options),
                on_snapshot=(lambda snap: self._print(snap, as_json))
                if options["print"] or as_json
                else None,
            )
            return self.run(worker)
        finally:
            if publisher is not None:
                publisher.close()
            if sampler is not None:
                sampler.close()
            lock.release()

    def publisher(self, host_name: str):
        """Where live snapshots go: the channel layer (``serve`` hands them to its hub)."""
        from monitoring.worker.publish import live_publisher

        return live_publisher(host_name)

    def run(self, worker) -> int:
        """Run the worker until it is stopped (``serve`` runs it beside the web server)."""
        return worker.run()

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
            self.stdout.write("\n".join(self._summary.lines(snapshot)))
        self.stdout.flush()
