"""Sustained ingest into PostgreSQL through ``SnapshotStore.flush``: COPY versus bulk INSERT.

Simulates N hosts x G GPUs (clones of the captured H100, own UUIDs, two processes each)
sampled at 1 Hz, each host flushing its own batch every ``--batch`` seconds as a
``manage.py collect`` worker does (host and GPU rows, samples, process sessions, one
transaction), as fast as the machine allows, from ``--procs`` client processes. Then one host
catching up on a backlog (an hour of outage, written 600 snapshots a flush).

Client (worker) and server share this machine's cores here, whereas real workers run on
their own hosts; so besides the end-to-end rate the bench reports the CPU time each side
spent per row (the server's read from /proc for its backends, when on this machine).

Target (issue 4): 100 hosts x 8 GPUs at 1 Hz with >= 10x headroom, i.e. >= 8,000 GPU rows/s
plus 1,000 host rows/s.

    source scripts/services.sh      # a throw-away PostgreSQL (or point DB_* at your own)
    DB=postgres .venv/bin/python bench/bench_ingest.py [--hosts 100 --gpus 8 --seconds 60]

Writes to its own database (``--database``, default ``hoofhearted_bench``), created and
migrated when missing, emptied before each mode.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_database import setup_django  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds per host")
    parser.add_argument("--batch", type=int, default=2, help="snapshots per host per flush")
    parser.add_argument(
        "--session-refresh",
        type=float,
        default=None,
        help="seconds between rewrites of open process sessions (default: SESSION_REFRESH_S; "
        "0: every flush, as before issue 4)",
    )
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="client processes")
    parser.add_argument("--backlog", type=int, default=3600, help="snapshots of the catch-up")
    parser.add_argument("--mode", choices=("copy", "bulk", "both"), default="both")
    parser.add_argument("--database", default="hoofhearted_bench")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args()


def empty_tables() -> None:
    from django.db import connection

    from monitoring.models import Alert, Event, Gpu, GpuSample, Host, HostSample, ProcessSession

    tables = ", ".join(
        m._meta.db_table for m in (GpuSample, HostSample, ProcessSession, Event, Alert, Gpu, Host)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} CASCADE")


def base_snapshot(gpus: int):
    """One real snapshot of ``gpus`` H100s under load (replayed capture)."""
    from monitoring.telemetry.factory import build_sampler
    from monitoring.telemetry.nvml_capture import load_capture, multi_gpu
    from monitoring.telemetry.replay import DEFAULT_REPLAY_DIR

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "nvml_load.json").write_text(
            json.dumps(multi_gpu(load_capture(DEFAULT_REPLAY_DIR, "load"), gpus))
        )
        sampler = build_sampler("replay", replay_dir=directory, replay_state="load")
        sampler.sample()
        time.sleep(0.2)
        base = sampler.sample()
        sampler.close()
    return base


def host_pair(base, name: str):
    """Two snapshots of one host (process lists read on alternate tiers), own GPU UUIDs."""
    pair = []
    for _ in range(2):
        snap = copy.deepcopy(base)
        snap.host.hostname = name
        for gpu in snap.gpus:
            gpu.uuid = f"GPU-{name}-{gpu.index:02d}"
            for proc in gpu.processes:
                proc.gpu_uuid = gpu.uuid
        pair.append(snap)
    return pair


def at(template, when: datetime):
    """The template at another time: a shallow copy, the GPU list and processes shared (a
    tick without the process tier repeats the previous list, as the worker's snapshots do)."""
    return dataclasses.replace(template, timestamp=when)


def server_cpu_s() -> float | None:
    """CPU seconds the server process of this connection used so far (same machine only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _steady_worker(job: dict) -> dict:
    """One client process: its share of the hosts, every round added then flushed."""
    from django.db import connections

    connections.close_all()  # never share the parent's connection after fork
    from monitoring.storage.writer import SnapshotStore

    base = job["base"]
    names = job["hosts"]
    pairs = [host_pair(base, name) for name in names]
    stores = [
        SnapshotStore(
            name,
            use_copy=job["use_copy"],
            buffer_size=10_000,
            session_refresh_s=job["session_refresh"],
        )
        for name in names
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seconds, batch = job["seconds"], job["batch"]
    server_before = server_cpu_s()
    job["barrier"].wait()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    gpu_rows = host_rows = flushes = 0
    worst = 0.0
    for first in range(0, seconds, batch):
        for store, pair in zip(stores, pairs, strict=True):
            for tick in range(first, min(first + batch, seconds)):
                # the process tier every 2 s: a new list on even ticks, repeated on odd ones
                store.add(at(pair[(tick // 2) % 2], start + timedelta(seconds=tick)))
        for store in stores:
            began = time.perf_counter()
            result = store.flush()
            worst = max(worst, time.perf_counter() - began)
            if result.error:
                raise SystemExit(f"flush failed: {result.error}")
            gpu_rows += result.gpu_rows
            host_rows += result.host_rows
            flushes += 1
    wall = time.perf_counter() - wall_before
    client = time.process_time() - cpu_before
    server_after = server_cpu_s()
    server = None if server_before is None or server_after is None else server_after - server_before
    return {
        "gpu_rows": gpu_rows,
        "host_rows": host_rows,
        "flushes": flushes,
        "wall": wall,
        "client_cpu": client,
        "server_cpu": server,
        "worst": worst,
    }


def run_steady(
    base,
    *,
    hosts: int,
    procs: int,
    seconds: int,
    batch: int,
    use_copy: bool,
    session_refresh: float | None,
):
    names = [f"bench-{i:04d}" for i in range(hosts)]
    procs = max(1, min(procs, hosts))
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(procs)
    jobs = [
        {
            "base": base,
            "hosts": names[i::procs],
            "use_copy": use_copy,
            "seconds": seconds,
            "batch": batch,
            "session_refresh": session_refresh,
            "barrier": barrier,
        }
        for i in range(procs)
    ]
    from django.db import connections

    connections.close_all()
    with context.Pool(procs) as pool:
        parts = pool.map(_steady_worker, jobs)
    wall = max(p["wall"] for p in parts)
    rows = sum(p["gpu_rows"] + p["host_rows"] for p in parts)
    servers = [p["server_cpu"] for p in parts]
    server = None if None in servers else sum(servers)
    client = sum(p["client_cpu"] for p in parts)
    return {
        "procs": procs,
        "flushes": sum(p["flushes"] for p in parts),
        "gpu_rows": sum(p["gpu_rows"] for p in parts),
        "host_rows": sum(p["host_rows"] for p in parts),
        "wall_s": wall,
        "gpu_rows_per_s": sum(p["gpu_rows"] for p in parts) / wall,
        "host_rows_per_s": sum(p["host_rows"] for p in parts) / wall,
        "rows_per_s": rows / wall,
        "client_cpu_us_per_row": 1e6 * client / rows,
        "server_cpu_us_per_row": None if server is None else 1e6 * server / rows,
        "client_cpu_ms_per_flush": 1e3 * client / sum(p["flushes"] for p in parts),
        "server_cpu_ms_per_flush": None
        if server is None
        else 1e3 * server / sum(p["flushes"] for p in parts),
        "slowest_flush_ms": 1000 * max(p["worst"] for p in parts),
    }


def run_backlog(base, *, snapshots: int, use_copy: bool, session_refresh: float | None) -> dict:
    from monitoring.storage.writer import SnapshotStore

    pair = host_pair(base, "bench-backlog")
    start = datetime(2026, 2, 1, tzinfo=UTC)
    store = SnapshotStore(
        "bench-backlog",
        use_copy=use_copy,
        buffer_size=snapshots,
        session_refresh_s=session_refresh,
    )
    for tick in range(snapshots):
        store.add(at(pair[(tick // 2) % 2], start + timedelta(seconds=tick)))
    gpu_rows = host_rows = 0
    server_before = server_cpu_s()
    cpu_before, began = time.process_time(), time.perf_counter()
    while store.pending:
        result = store.flush(max_snapshots=600)
        if result.error:
            raise SystemExit(f"flush failed: {result.error}")
        gpu_rows += result.gpu_rows
        host_rows += result.host_rows
    wall = time.perf_counter() - began
    client = time.process_time() - cpu_before
    server_after = server_cpu_s()
    rows = gpu_rows + host_rows
    return {
        "gpu_rows": gpu_rows,
        "host_rows": host_rows,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "gpu_rows_per_s": gpu_rows / wall,
        "client_cpu_us_per_row": 1e6 * client / rows,
        "server_cpu_us_per_row": None
        if server_before is None or server_after is None
        else 1e6 * (server_after - server_before) / rows,
    }


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main() -> None:
    args = parse_args()
    setup_django(args.database, "bench_ingest")
    from django.db import connection

    base = base_snapshot(args.gpus)
    modes = ["copy", "bulk"] if args.mode == "both" else [args.mode]
    from django.conf import settings

    refresh = settings.SESSION_REFRESH_S if args.session_refresh is None else args.session_refresh
    need_gpu = args.hosts * args.gpus
    need_rows = need_gpu + args.hosts
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    figures: dict = {
        "postgresql": server,
        "cpus": os.cpu_count(),
        "hosts": args.hosts,
        "gpus_per_host": args.gpus,
        "batch_s": args.batch,
        "session_refresh_s": refresh,
        "needed_rows_per_s_at_1hz": need_rows,
    }
    for mode in modes:
        empty_tables()
        steady = run_steady(
            base,
            hosts=args.hosts,
            procs=args.procs,
            seconds=args.seconds,
            batch=args.batch,
            use_copy=mode == "copy",
            session_refresh=args.session_refresh,
        )
        steady["headroom"] = steady["rows_per_s"] / need_rows
        backlog = run_backlog(
            base,
            snapshots=args.backlog,
            use_copy=mode == "copy",
            session_refresh=args.session_refresh,
        )
        figures[mode] = {"steady": steady, "backlog": backlog}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"PostgreSQL {server}, {os.cpu_count()} CPUs, {args.procs} client processes; "
        f"{args.hosts} hosts x {args.gpus} GPUs, {args.seconds} s at 1 Hz, "
        f"a flush per host every {args.batch} s, open sessions rewritten every {refresh:g} s"
    )
    print(f"needed at 1 Hz: {need_gpu:,} GPU rows/s + {args.hosts:,} host rows/s")
    for mode in modes:
        steady, backlog = figures[mode]["steady"], figures[mode]["backlog"]
        print(
            f"{mode:>4} steady : {steady['gpu_rows_per_s']:>8,.0f} GPU + "
            f"{steady['host_rows_per_s']:>6,.0f} host rows/s = {steady['rows_per_s']:>8,.0f} "
            f"rows/s ({steady['headroom']:.1f}x headroom); per flush: client "
            f"{steady['client_cpu_ms_per_flush']:.1f} ms CPU, server "
            f"{_us(steady['server_cpu_ms_per_flush'])} ms CPU; slowest flush "
            f"{steady['slowest_flush_ms']:.0f} ms"
        )
        print(
            f"{mode:>4} backlog: {backlog['rows_per_s']:>8,.0f} rows/s "
            f"({args.backlog} snapshots in {backlog['wall_s']:.2f} s); per row: client "
            f"{_us(backlog['client_cpu_us_per_row'])} us CPU, server "
            f"{_us(backlog['server_cpu_us_per_row'])} us CPU"
        )


if __name__ == "__main__":
    main()
