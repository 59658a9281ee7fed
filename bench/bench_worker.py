"""Worker cost at 1 Hz on replayed GPUs: CPU % of one core, RSS over time, late ticks.

Runs the real ``manage.py collect --replay`` (the same loop as production: sampling, tiers,
storage thread, publisher) as a child process and reads its CPU time and RSS from
/proc/<pid>/stat and /proc/<pid>/status, so the figures are the worker's own, threads
included, and the measuring costs the worker nothing. The first ``--warmup`` seconds
(Django start-up, migrations) are left out of the CPU figure.

Targets (issue 4): at most 0.5 % of one core, RSS at most 80 MiB, memory flat. Issue 12:
with ``--gpus 8 --charge-cost`` (eight H100 clones, every NVML call spending its recorded
cost), at most 1 % of one core.

    .venv/bin/python bench/bench_worker.py --minutes 10
    .venv/bin/python bench/bench_worker.py --minutes 10 --gpus 8 --charge-cost
    .venv/bin/python bench/bench_worker.py --minutes 60 --keep-env   # DB=postgres, REDIS_URL …

By default the child gets a fresh SQLite database and the in-process channel layer (the
one-command setup; the worker then publishes nothing, no other process could hear it);
``--keep-env`` passes this shell's DB_* and REDIS_URL through instead (with DB=postgres the
worker writes to its own database, ``hoofhearted_bench_worker``, created and migrated first),
and ``--viewer`` (with Redis) keeps one dashboard-like consumer in the live group, so every
tick is also serialised and sent (without one the worker skips that work).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "monitoring" / "captures" / "nvidia" / "h100"
CPU_TARGET_PERCENT = 0.5
CPU_TARGET_8_GPUS_PERCENT = 1.0
RSS_TARGET_MIB = 80.0
TICKS = os.sysconf("SC_CLK_TCK")
#: With --keep-env and DB=postgres: the database the worker writes to (never the user's).
PG_DATABASE = "hoofhearted_bench_worker"


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_env(keep_env: bool, database: Path) -> dict[str, str]:
    env = dict(os.environ)
    if not keep_env:
        env = {k: v for k, v in env.items() if not k.startswith(("DB", "REDIS"))}
        env.update(DB="sqlite", DB_NAME=str(database))
    elif env.get("DB") == "postgres":
        env["DB_NAME"] = PG_DATABASE
    env.setdefault("HOOFHEARTED_HOST_NAME", "bench-worker")
    env.setdefault("LOG_LEVEL", "info")
    return env


def prepare_postgres(env: dict[str, str]) -> None:
    """Create and migrate the benchmark's own database: the worker does not migrate
    PostgreSQL, and without tables it would only buffer (and cost less than it does)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_database import create_database

    create_database(env["DB_NAME"])
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True
    )


def replay_dir(tmp: Path, gpus: int, state: str) -> Path:
    """The shipped H100 capture, or a directory of ``gpus`` clones of it (own UUIDs)."""
    if gpus <= 1:
        return H100
    from monitoring.telemetry.nvml_capture import load_capture, multi_gpu

    directory = tmp / "replay"
    directory.mkdir()
    capture = multi_gpu(load_capture(H100, state), gpus)
    (directory / f"nvml_{state}.json").write_text(json.dumps(capture))
    return directory


def cpu_target(args: argparse.Namespace) -> float:
    """Issue 4's 0.5 % for one GPU; issue 12's 1 % for eight, NVML costs charged."""
    return CPU_TARGET_8_GPUS_PERCENT if args.gpus > 1 else CPU_TARGET_PERCENT


class Viewer(threading.Thread):
    """One consumer in the live group on Redis, like an open dashboard; counts messages."""

    def __init__(self, redis_url: str, group: str) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.group = redis_url, group
        self.received = 0
        self.stopping = False
        self.ready = threading.Event()

    def run(self) -> None:
        import asyncio

        asyncio.run(self._run())

    async def _run(self) -> None:
        import asyncio

        from channels_redis.core import RedisChannelLayer

        layer = RedisChannelLayer(hosts=[self.redis_url])
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.ready.set()
        while not self.stopping:
            try:
                await asyncio.wait_for(layer.receive(channel), 1.0)
                self.received += 1
            except TimeoutError:
                continue
        await layer.group_discard(self.group, channel)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds left out (start-up)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between RSS readings")
    parser.add_argument("--state", default="load", choices=("idle", "load"))
    parser.add_argument("--keep-env", action="store_true", help="use this shell's DB and Redis")
    parser.add_argument(
        "--viewer", action="store_true", help="keep one consumer in the live group (Redis)"
    )
    parser.add_argument("--gpus", type=int, default=1, help="replay this many H100 clones")
    parser.add_argument(
        "--charge-cost", action="store_true", help="each NVML call spends its recorded cost"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    viewer = None
    if args.viewer:
        if not (args.keep_env and os.environ.get("REDIS_URL")):
            parser.error("--viewer needs --keep-env and REDIS_URL")
        viewer = Viewer(
            os.environ["REDIS_URL"], os.environ.get("HOOFHEARTED_TELEMETRY_GROUP", "telemetry")
        )
        viewer.start()
        viewer.ready.wait(10)

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        env = child_env(args.keep_env, Path(tmp) / "bench.sqlite3")
        if env.get("DB") == "postgres":
            prepare_postgres(env)
        log_path = Path(tmp) / "worker.log"
        replay = replay_dir(Path(tmp), args.gpus, args.state)
        extra = ["--charge-cost"] if args.charge_cost else []
        with log_path.open("w") as log:
            child = subprocess.Popen(
                [sys.executable, "manage.py", "collect", "--replay", str(replay),
                 "--state", args.state, *extra],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
            try:
                time.sleep(args.warmup)
                if child.poll() is not None:
                    print(log_path.read_text(), file=sys.stderr)
                    return 1
                wall0, cpu0, rss0 = time.monotonic(), cpu_seconds(child.pid), rss_mib(child.pid)
                readings = [(0.0, rss0)]
                end = wall0 + args.minutes * 60
                while time.monotonic() < end:
                    time.sleep(min(args.every, max(0.0, end - time.monotonic())))
                    readings.append((time.monotonic() - wall0, rss_mib(child.pid)))
                wall1, cpu1 = time.monotonic(), cpu_seconds(child.pid)
            finally:
                child.send_signal(signal.SIGTERM)
                code = child.wait(timeout=60)
        text = log_path.read_text()
    received = 0
    if viewer is not None:
        viewer.stopping = True
        viewer.join(5)
        received = viewer.received

    stop = re.search(r"after (\d+) ticks \((\d+) failed, (\d+) late, (\d+) skipped\)", text)
    ticks, failed, late, skipped = (int(g) for g in stop.groups()) if stop else (0, 0, 0, 0)
    if "database unavailable" in text or "NOT written" in text:
        print("warning: the worker could not write to its database; see its log:", file=sys.stderr)
        print(text[-2000:], file=sys.stderr)
    cpu_percent = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    rss_values = [r for _, r in readings]
    half = len(rss_values) // 2 or 1
    figures = {
        "minutes": round((wall1 - wall0) / 60, 2),
        "cpu_percent_of_one_core": round(cpu_percent, 3),
        "cpu_ms_per_tick": round(1000 * (cpu1 - cpu0) / max(1.0, wall1 - wall0), 2),
        "rss_start_mib": round(rss_values[0], 1),
        "rss_end_mib": round(rss_values[-1], 1),
        "rss_max_mib": round(max(rss_values), 1),
        "rss_growth_second_half_mib": round(rss_values[-1] - rss_values[half - 1], 1),
        "ticks": ticks,
        "failed_ticks": failed,
        "late_ticks": late,
        "skipped_ticks": skipped,
        "exit_status": code,
        "database": env.get("DB", "sqlite"),
        "channel_layer": "redis" if env.get("REDIS_URL") else "in-memory",
        "viewer_messages": received if viewer is not None else None,
        "gpus": args.gpus,
        "nvml_cost_charged": args.charge_cost,
        "cpu_target_percent": cpu_target(args),
        "cpu_target_met": cpu_percent <= cpu_target(args),
        "rss_target_met": max(rss_values) <= RSS_TARGET_MIB,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        watched = f", one viewer ({received} messages)" if viewer is not None else ""
        print(
            f"worker at 1 Hz, {args.gpus} replayed H100 ({args.state})"
            f"{', NVML costs charged' if args.charge_cost else ''}, {figures['minutes']} min, "
            f"{figures['database']} + {figures['channel_layer']} channel layer{watched}"
        )
        print(
            f"  CPU: {figures['cpu_percent_of_one_core']} % of one core "
            f"({figures['cpu_ms_per_tick']} ms per tick) — target ≤ {cpu_target(args)} %"
        )
        print(
            f"  RSS: {figures['rss_start_mib']} MiB at start, {figures['rss_end_mib']} MiB at "
            f"end, max {figures['rss_max_mib']} MiB, second-half growth "
            f"{figures['rss_growth_second_half_mib']} MiB — target ≤ {RSS_TARGET_MIB:.0f} MiB"
        )
        print(
            f"  ticks: {ticks} ({late} late, {skipped} skipped, {failed} failed); "
            f"exit status {code}"
        )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
