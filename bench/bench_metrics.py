"""``GET /metrics`` for 8 GPUs with 50 processes (issue 11: a scrape in <= 20 ms).

A real worker replays the H100 capture cloned to 8 GPUs, with 50 GPU processes spread over
them (each a copy of a captured one under its own pid, name and user), and writes its latest
snapshot to PostgreSQL. Then times, median of ``--runs`` after a warm-up:

- the exposition alone (prometheus-client over the stored rows, no query);
- the view through Django's whole middleware stack (the query, the exposition, the response)
  in-process, with Django's test client;
- a scrape as Prometheus makes it: GET /metrics from a real daphne on loopback over a kept-alive
  connection (what ``scrape_duration_seconds`` would show, less the network);
- the size of the answer and how many series it holds.

Each figure is the best median of ``--repeat`` rounds (other jobs on the machine only add).

    source scripts/services.sh      # a throw-away PostgreSQL (or point DB_* at your own)
    DB=postgres .venv/bin/python bench/bench_metrics.py [--runs 200] [--json]

Writes only to its own database (``--database``, default ``hoofhearted_bench_metrics``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_database import setup_django  # noqa: E402
from harness import fmt_us, load_capture, measure  # noqa: E402

GPUS = 8
PROCESSES = 50
HOST = "bench-metrics"


def busy_capture(directory: Path) -> Path:
    """The H100 load capture as 8 GPUs with ``PROCESSES`` GPU processes among them."""
    from monitoring.telemetry.nvml_capture import multi_gpu

    capture = multi_gpu(load_capture("load"), GPUS)
    template = capture["gpus"][0]["compute_procs"]["value"][0]
    for index, gpu in enumerate(capture["gpus"]):
        procs = []
        for n in range(index, PROCESSES, GPUS):
            proc = copy.deepcopy(template)
            proc["pid"] = 10_000 + n
            proc["usedGpuMemory"] = (1 + n % 7) * 1024**3
            proc["resolved"] = {
                "name": f"python3 train_{n}.py",
                "user": f"user{n % 9}",
                "cmd": ["python3", f"train_{n}.py", "--epochs", "90"],
            }
            procs.append(proc)
        gpu["compute_procs"]["value"] = procs
        gpu["process_util"] = {"value": [], "us": 1.0}
    (directory / "nvml_load.json").write_text(json.dumps(capture))
    return directory


def collect_latest(directory: Path) -> None:
    from django.conf import settings

    from monitoring.storage.writer import SnapshotStore
    from monitoring.telemetry.factory import build_sampler
    from monitoring.worker.loop import CollectWorker, WorkerConfig

    sampler = build_sampler("replay", replay_dir=directory, replay_state="load", hostname=HOST)
    worker = CollectWorker(sampler, SnapshotStore(HOST), WorkerConfig(host_name=HOST))
    for n in range(2):  # the first tick reads the processes too
        worker.tick(worker.schedule.tiers(n))
    assert worker.flush().error is None
    settings.STALE_AFTER_S = 10**9  # the snapshot stays fresh however long the runs take


def scrape_over_http(database: str, runs: int, repeat: int) -> dict[str, float]:
    """Start daphne on this database and time GET /metrics on one kept-alive connection."""
    import http.client
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, DB_NAME=database, HOOFHEARTED_STALE_AFTER_S="999999999")
    daphne = subprocess.Popen(
        [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port),
         "-v", "0", "hoofhearted.asgi:application"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def get() -> None:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status

        return best(get, runs, repeat)
    finally:
        daphne.terminate()
        daphne.wait(10)


def best(fn, runs: int, repeat: int) -> dict[str, float]:
    """The round with the lowest median: other jobs on the machine only ever add time."""
    return min((measure(fn, runs) for _ in range(repeat)), key=lambda r: r["median_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best median of this many rounds")
    parser.add_argument("--database", default="hoofhearted_bench_metrics")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    setup_django(args.database, "bench_metrics")

    from django.test import Client

    from dashboard.prometheus import exposition
    from monitoring.models import Host
    from monitoring.storage.latest import latest_snapshots

    Host.objects.all().delete()
    with tempfile.TemporaryDirectory() as tmp:
        collect_latest(busy_capture(Path(tmp)))
    rows = latest_snapshots()
    processes = sum(len(g["processes"]) for g in rows[0].data["gpus"])
    assert (len(rows[0].data["gpus"]), processes) == (GPUS, PROCESSES), processes
    now = time.time()
    client = Client(HTTP_HOST="localhost")
    body = client.get("/metrics").content
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    results = {
        "gpus": GPUS,
        "processes": PROCESSES,
        "bytes": len(body),
        "series": series,
        "exposition_only": best(lambda: exposition(rows, 10**9, now), args.runs, args.repeat),
        "view_with_query": best(lambda: client.get("/metrics"), args.runs, args.repeat),
        "scrape_over_http": scrape_over_http(args.database, args.runs, args.repeat),
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"/metrics, {GPUS} GPUs, {PROCESSES} processes: {series} series, {len(body):,} bytes")
    print(f"  (load average {results['load_average']:.2f} at the end)")
    for name in ("exposition_only", "view_with_query", "scrape_over_http"):
        r = results[name]
        print(f"  {name:<16} median {fmt_us(r['median_us'])}, p90 {fmt_us(r['p90_us'])}")


if __name__ == "__main__":
    main()
