"""The live page under load, in the production shape: one daphne, one worker, Redis, PostgreSQL.

Starts ``manage.py collect --replay <H100> --state load,idle --switch-s 5`` (a real worker
publishing at 1 Hz through Redis) and one daphne serving ``hoofhearted.asgi:application``
as shipped, on uvloop (``python -m hoofhearted.web``; ``--server daphne``: plain ``daphne``,
``--server serve``: ``manage.py serve --no-collector``), then measures, each from
outside the server process:

- **fan-out**: 1, 10, 100, 1,000 WebSocket viewers (``live_clients.py``, one or two client
  processes) for ``--seconds`` each: latency from the sample's time (the status fragment's
  ``<time datetime>``) to each viewer holding its frame, p50 and p99; viewers dropped; frames
  missed; bytes per frame; the server's CPU (% of one core) and RSS from /proc, and the
  worker's and Redis' CPU beside it. Targets (issue 8): p99 ≤ 100 ms at 100 viewers; at
  1,000, p99 ≤ 250 ms with none dropped.
- **one idle viewer**: the server's CPU with nobody watching, then with one viewer at 1 Hz.
- **bytes per tick**: the frames above, per GPU; and, in this process, one GPU figure changed
  between two ticks (target ≤ 2 KB per GPU).
- **first page load** (``--page``): headless Chromium (Debian's, through Playwright): bytes
  on the wire, compressed, for the page and everything it loads (target ≤ 150 KB), and the
  time to the first live update.

    source scripts/services.sh
    DB=postgres .venv/bin/python bench/bench_live.py                      # everything
    DB=postgres .venv/bin/python bench/bench_live.py --clients 100 --layer pubsub --no-page

The worker and the server write to and read from their own database,
``hoofhearted_bench_live`` (created and migrated first); ``--layer core|pubsub`` swaps the
Redis channel layer's backend (``bench/live_settings.py``) to compare the two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_worker import cpu_seconds, rss_mib  # noqa: E402

from dashboard.tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

H100 = ROOT / "monitoring" / "captures" / "nvidia" / "h100"
PG_DATABASE = "hoofhearted_bench_live"
HOST = "bench-live"
#: Above this many viewers the clients run in two processes (one asyncio loop is then the
#: bottleneck of its own measurement).
ONE_CLIENT_PROCESS_MAX = 200
TARGETS_MS = {100: 100.0, 1000: 250.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def renice(pid: int | None, priority: int) -> None:
    """Give a process of the benchmark this nice value (``--renice``: other jobs sharing the
    machine then disturb the measurement less; negative values need root)."""
    if pid and priority:
        os.setpriority(os.PRIO_PROCESS, pid, priority)


def redis_pid(url: str) -> int | None:
    import redis

    try:
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    except Exception:
        return None


class Processes:
    """The worker and the server, started apart and stopped at the end."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            DB_NAME=PG_DATABASE,
            HOOFHEARTED_HOST_NAME=HOST,
            LOG_LEVEL="warning",
            DJANGO_SETTINGS_MODULE="bench.live_settings",
            PYTHONPATH=str(ROOT),
        )
        if args.layer:
            self.env["BENCH_CHANNEL_LAYER"] = args.layer
        self.logs = tmp
        self.worker: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None

    def prepare(self) -> None:
        from bench_database import create_database

        create_database(PG_DATABASE)
        for command in (["migrate"], ["collectstatic", "--noinput"]):
            subprocess.run(
                [sys.executable, "manage.py", *command, "--verbosity", "0"],
                cwd=ROOT,
                env=self.env,
                check=True,
            )

    def start(self) -> None:
        self.worker = self._spawn(
            "worker",
            [sys.executable, "manage.py", "collect", "--replay", str(H100),
             "--state", "load,idle", "--switch-s", "5"],
        )  # fmt: skip
        if self.args.server == "serve":
            server = [sys.executable, "manage.py", "serve", "--no-collector",
                      "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        else:  # daphne's command line, on uvloop (web, as shipped) or on asyncio's own loop
            if self.args.server == "web":
                daphne = ["-m", "hoofhearted.web"]
            else:
                daphne = [str(Path(sys.executable).with_name("daphne"))]
            server = [sys.executable, *daphne, "--websocket_timeout", "-1",
                      "-b", "127.0.0.1", "-p", str(self.port), "hoofhearted.asgi:application"]  # fmt: skip
        self.server = self._spawn("server", server)
        wait_for_port(self.port)
        time.sleep(3)  # the worker's first ticks

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log
        )
        renice(proc.pid, self.args.renice)
        return proc

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return (self.logs / f"{name}.log").read_text()[-chars:]

    def stop(self) -> None:
        for proc in (self.server, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.server, self.worker):
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/live/?host={HOST}"

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hosts/{HOST}/"


class CpuMeter:
    """CPU time of some processes between ``start`` and ``stop``, as % of one core."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        return {
            name: round(100 * (cpu_seconds(pid) - self.cpu0[name]) / wall, 2)
            for name, pid in self.pids.items()
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_clients(procs: Processes, count: int, seconds: float, warmup: float):
    """A ``live_clients.py`` process of ``count`` viewers (it prints a line once all are in)."""
    command = [sys.executable, str(ROOT / "bench" / "live_clients.py"), procs.ws_url,
               "--clients", str(count), "--seconds", str(seconds), "--warmup", str(warmup)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    renice(proc.pid, procs.args.renice)
    return proc


def frames_missed(result: dict) -> int:
    """Frames a client process's viewers did not get, of the ticks sampled well inside its
    window (one sampled near the end may still be on its way)."""
    start, end = result["window"]
    missed = 0
    for sampled, latencies in result["by_tick"].items():
        if start + 0.5 <= datetime.fromisoformat(sampled).timestamp() <= end - 2.0:
            missed += result["connected"] - result["dropped"] - len(latencies)
    return missed


def fan_out(procs: Processes, clients: int, args: argparse.Namespace, meter: CpuMeter) -> dict:
    """``clients`` viewers for ``args.seconds``: latency, drops, sizes, server cost."""
    parts = 1 if clients <= ONE_CLIENT_PROCESS_MAX else 2
    shares = [clients // parts + (1 if i < clients % parts else 0) for i in range(parts)]
    runners = [start_clients(procs, share, args.seconds, args.warmup) for share in shares]
    connected = [json.loads(runner.stdout.readline() or "{}") for runner in runners]
    # Each client process starts its window ``warmup`` s after its own "connected" line.
    time.sleep(args.warmup)
    meter.start()
    client_meter = CpuMeter({f"clients {i + 1}": r.pid for i, r in enumerate(runners)})
    client_meter.start()
    rss = [rss_mib(procs.server.pid)]
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        rss.append(rss_mib(procs.server.pid))
    cpu = meter.stop()
    cpu.update(client_meter.stop())
    results = [
        json.loads(runner.communicate(timeout=120)[0].splitlines()[-1]) for runner in runners
    ]
    latencies = [lat for r in results for lat in r["latencies_s"]]
    sizes = [size for r in results for size in r["sizes"]]
    ticks = len({s for r in results for s in r["sampled"]})
    missed = sum(frames_missed(r) for r in results)
    by_tick: dict[str, list[float]] = {}
    for r in results:
        for sampled, values in r["by_tick"].items():
            by_tick.setdefault(sampled, []).extend(values)
    return {
        "clients": clients,
        "client_processes": parts,
        # each tick: the sample's time, viewers, fastest, median and slowest latency (ms)
        "ticks_ms": [
            [sampled[11:23], len(v), *(round(1000 * percentile(v, q), 1) for q in (0, 0.5, 1))]
            for sampled, v in sorted(by_tick.items())
        ],
        "connected": sum(c.get("connected", 0) for c in connected),
        "connect_s": max(r["connect_s"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "dropped_reasons": sorted({x for r in results for x in r["dropped_reasons"]}),
        "ticks": ticks,
        "frames_missed": missed,
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 0.50), 1),
            "p95": round(1000 * percentile(latencies, 0.95), 1),
            "p99": round(1000 * percentile(latencies, 0.99), 1),
            "max": round(1000 * max(latencies, default=float("nan")), 1),
            "n": len(latencies),
        },
        "frame_bytes": {
            "median": statistics.median(sizes) if sizes else None,
            "max": max(sizes, default=None),
            "first_frame": results[0]["first_frame_bytes"][0]
            if results[0]["first_frame_bytes"]
            else None,
        },
        "cpu_percent_of_one_core": cpu,
        "server_rss_mib": {"start": round(rss[0], 1), "max": round(max(rss), 1)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_ms": TARGETS_MS.get(clients),
        "target_met": (
            None
            if clients not in TARGETS_MS
            else percentile(latencies, 0.99) * 1000 <= TARGETS_MS[clients]
            and (clients < 1000 or sum(r["dropped"] for r in results) == 0)
        ),
    }


def idle_viewer(procs: Processes, args: argparse.Namespace, meter: CpuMeter) -> dict:
    """The server's CPU with nobody watching, then with one viewer at 1 Hz."""
    time.sleep(35)  # past the hub's linger: it leaves the group
    meter.start()
    time.sleep(args.idle_seconds)
    nobody = meter.stop()
    runner = start_clients(procs, 1, args.idle_seconds, 5)
    runner.stdout.readline()
    time.sleep(5)
    meter.start()
    time.sleep(args.idle_seconds)
    one = meter.stop()
    result = json.loads(runner.communicate(timeout=60)[0].splitlines()[-1])
    return {
        "seconds": args.idle_seconds,
        "nobody_watching": nobody,
        "one_viewer": one,
        "server_cost_of_one_viewer_percent": round(one["server"] - nobody["server"], 2),
        "frames": len(result["latencies_s"]),
    }


def one_figure_changed() -> dict:
    """Bytes a viewer is sent when one GPU figure changed between two ticks, per fragment
    (rendered in this process from the H100 load capture, as the hub renders it)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoofhearted.settings")
    django.setup()
    import copy

    from dashboard import fragments as frag
    from dashboard.present import view
    from dashboard.sparklines import Recent
    from dashboard.tests.live_helpers import captured, later

    results = {}
    for gpus in (1, 8):
        first = captured("load", HOST)
        for i in range(1, gpus):  # the capture's GPU, cloned (as ``multi_gpu`` does)
            clone = copy.deepcopy(first.gpus[0])
            clone.index = i
            first.gpus.append(clone)
        then = later(first, 1.0, temperature=(first.gpus[0].temperature or 0) + 1)
        recent = Recent()
        recent.add(first)
        status = frag.Status("live", "live", 0.0)
        frames = [
            frag.render_frame(
                view(snap, HOST), recent, host=HOST, version=n, status=status, alerts=[], hosts=[]
            )
            for n, snap in enumerate((first, then))
        ]
        a, b = frames
        html = frag.changes(b, a.hashes, a.layout)
        sent = {fid: len(b.fragments[fid].encode()) for fid in b.fragments
                if a.hashes.get(fid) != b.hashes[fid]}  # fmt: skip
        results[f"{gpus}_gpu"] = {
            "bytes": len(html.encode()),
            "per_gpu": round(len(html.encode()) / gpus),
            "fragments": sent,
            "full_frame_bytes": len(str(b.body).encode()),
        }
    return results


#: In the page: when the sample's time first differs from the one the page was served with.
FIRST_UPDATE_JS = """
document.addEventListener("DOMContentLoaded", () => {
  const sampled = () => {
    const t = document.querySelector("#data-status time");
    return t && t.getAttribute("datetime");
  };
  const first = sampled();
  new MutationObserver(() => {
    if (!window.__liveAt && sampled() && sampled() !== first) window.__liveAt = performance.now();
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
});
"""


def page_load(procs: Processes) -> dict:
    """What a browser fetches for the live page, compressed on the wire, and how long until
    the first live update replaces the sample the page was rendered with."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        requests: dict[str, dict] = {}
        ws_frames: list[int] = []

        def on_response(event):
            response = event["response"]
            requests.setdefault(event["requestId"], {}).update(
                url=response["url"],
                type=event.get("type"),
                encoding=(response.get("headers") or {}).get("content-encoding")
                or (response.get("headers") or {}).get("Content-Encoding"),
            )

        def on_finished(event):
            requests.setdefault(event["requestId"], {})["wire"] = event["encodedDataLength"]

        cdp.on("Network.responseReceived", on_response)
        cdp.on("Network.loadingFinished", on_finished)
        started: list[float] = []  # CDP's clock (s): when the page was asked for
        ws_open: list[float] = []
        cdp.on(
            "Network.requestWillBeSent",
            lambda e: started.append(e["timestamp"]) if not started else None,
        )
        cdp.on(
            "Network.webSocketHandshakeResponseReceived",
            lambda e: ws_open.append(e["timestamp"]),
        )
        cdp.on(
            "Network.webSocketFrameReceived",
            lambda e: ws_frames.append(
                (e["timestamp"], len(e["response"]["payloadData"].encode()))
            ),
        )
        page.add_init_script(FIRST_UPDATE_JS)
        page.goto(procs.page_url, wait_until="load")
        page.wait_for_function("() => window.__liveAt", timeout=15000)
        timing = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {now: window.__liveAt, dcl: n.domContentLoadedEventEnd,"
            " load: n.loadEventEnd, html: n.responseEnd}; }"
        )
        browser.close()
    rows = sorted(
        (
            {
                "url": r["url"].replace(f"http://127.0.0.1:{procs.port}", ""),
                "type": r.get("type"),
                "encoding": r.get("encoding"),
                "bytes": r.get("wire", 0),
            }
            for r in requests.values()
            if r.get("url", "").startswith("http")
        ),
        key=lambda r: -r["bytes"],
    )
    return {
        "total_bytes": sum(r["bytes"] for r in rows),
        "requests": rows,
        "first_ws_frame_bytes": ws_frames[0][1] if ws_frames else None,
        # from the page's request, on the browser's clock: the socket open, each frame
        "ws_open_ms": round(1000 * (ws_open[0] - started[0]), 1) if ws_open else None,
        "ws_frames_ms": [round(1000 * (at - started[0]), 1) for at, _size in ws_frames][:4],
        "html_ms": round(timing["html"], 1),
        "dom_content_loaded_ms": round(timing["dcl"], 1),
        "load_ms": round(timing["load"], 1),
        "first_live_update_ms": round(timing["now"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,10,100,1000", help="viewer counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per count")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="0: skip")
    parser.add_argument("--layer", choices=("core", "pubsub"), help="default: the settings'")
    parser.add_argument(
        "--server",
        choices=("web", "daphne", "serve"),
        default="web",
        help="web: python -m hoofhearted.web (daphne on uvloop, as shipped); daphne: plain daphne",
    )
    parser.add_argument("--no-page", action="store_true", help="skip the browser page load")
    parser.add_argument(
        "--renice",
        type=int,
        default=0,
        help="nice value for the server, worker, clients and Redis (e.g. -10 on a shared box)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()
    if os.environ.get("DB") != "postgres" or not os.environ.get("REDIS_URL"):
        parser.error("run with DB=postgres and REDIS_URL (source scripts/services.sh)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))

    figures: dict = {
        "layer": args.layer or "settings",
        "server": args.server,
        "renice": args.renice,
    }
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        procs = Processes(args, Path(tmp))
        procs.prepare()
        procs.start()
        try:
            redis = redis_pid(os.environ["REDIS_URL"])
            renice(redis, args.renice)
            meter = CpuMeter(
                {"server": procs.server.pid, "worker": procs.worker.pid, "redis": redis}
            )
            if not args.no_page:
                # cold: nobody watched yet, so the worker is not publishing (it asks every 2 s)
                figures["page"] = page_load(procs)
                # warm: another viewer is watching, the live updates flow already
                watcher = start_clients(procs, 1, 30, 0)
                watcher.stdout.readline()
                time.sleep(3)
                figures["page_warm"] = page_load(procs)
                watcher.communicate(timeout=60)
                if not args.json:
                    print_page(figures["page"], "cold")
                    print_page(figures["page_warm"], "warm")
            figures["fan_out"] = []
            for count in (int(c) for c in args.clients.split(",") if c):
                row = fan_out(procs, count, args, meter)
                figures["fan_out"].append(row)
                if not args.json:
                    print_fan_out(row)
            if args.idle_seconds:
                figures["idle_viewer"] = idle_viewer(procs, args, meter)
                if not args.json:
                    print_idle(figures["idle_viewer"])
        finally:
            procs.stop()
            for name in ("server", "worker"):
                text = procs.log_tail(name)
                if "Traceback" in text or "ERROR" in text:
                    print(f"--- {name} log (tail) ---\n{text}", file=sys.stderr)
    figures["one_figure_changed"] = one_figure_changed()
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, row in figures["one_figure_changed"].items():
            print(
                f"one GPU figure changed ({key.replace('_', ' ')}): {row['bytes']} B sent "
                f"({', '.join(f'{k} {v}' for k, v in row['fragments'].items())}); "
                f"full frame {row['full_frame_bytes']} B"
            )
    return 0


def print_fan_out(row: dict) -> None:
    lat = row["latency_ms"]
    cpu = row["cpu_percent_of_one_core"]
    target = (
        ""
        if row["target_met"] is None
        else f" target {row['target_ms']:.0f} ms: " + ("met" if row["target_met"] else "MISSED")
    )
    print(
        f"{row['clients']:>5} viewers: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} "
        f"ms, max {lat['max']} ms ({lat['n']} frames, {row['ticks']} ticks, "
        f"{row['frames_missed']} missed), dropped {row['dropped']}; server CPU "
        f"{cpu.get('server')} %, RSS {row['server_rss_mib']['max']} MiB; worker "
        f"{cpu.get('worker')} %, redis {cpu.get('redis')} %, clients "
        f"{' + '.join(str(v) for k, v in cpu.items() if k.startswith('clients'))} %; frame median "
        f"{row['frame_bytes']['median']} B; load {row['load_average'][0]};{target}",
        flush=True,
    )


def print_page(page: dict, when: str) -> None:
    print(
        f"first page load ({when}): {page['total_bytes']} B on the wire in {len(page['requests'])} "
        f"requests; HTML at {page['html_ms']} ms, load {page['load_ms']} ms, first live "
        f"update at {page['first_live_update_ms']} ms",
        flush=True,
    )
    for r in page["requests"]:
        print(f"    {r['bytes']:>7} B  {r['encoding'] or '-':<6} {r['url']}")


def print_idle(idle: dict) -> None:
    print(
        f"one idle viewer at 1 Hz: server {idle['one_viewer'].get('server')} % of one core "
        f"(nobody watching: {idle['nobody_watching'].get('server')} %), so one viewer costs "
        f"{idle['server_cost_of_one_viewer_percent']} %; worker "
        f"{idle['one_viewer'].get('worker')} % (nobody: {idle['nobody_watching'].get('worker')} %)",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
