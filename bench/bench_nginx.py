"""What nginx in front adds: to ``/api/history`` and to a live frame, against daphne direct.

Starts the deployment the nginx tests use (``dashboard/tests/site.py``): nginx on the shipped
``deploy/nginx/hoofhearted.conf`` with a self-signed certificate (TLS 1.3, keep-alive), daphne
on loopback, and a real worker replaying the H100 capture at ``--interval-ms`` (250), with
live updates through Redis when ``REDIS_URL`` is set (source scripts/services.sh first).

- ``/api/history`` (one GPU, utilization, last 10 minutes, 500 points): ``--runs`` requests
  on one kept-alive connection each way, alternating; median and p90 of each.
- A live frame: two WebSockets on the same page, one straight to daphne and one through
  nginx (wss). The hub sends each frame to both at once; for each frame (keyed by its sample
  time) the difference of arrival times is what nginx adds. Median and p90 over
  ``--seconds`` of frames; and for each way, the median time from the sample (its timestamp)
  to the frame at the socket. The hub sends to the two viewers one after the other, so a
  pair carries the order of the sends too (tens of µs).

    source scripts/services.sh
    .venv/bin/python bench/bench_nginx.py [--runs 300] [--seconds 30] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard.tests.site import HOST, TOKEN, running_site  # noqa: E402

HISTORY = f"/api/history?host={HOST}&gpu=0&metric=utilization&from=-10m&points=500"
SAMPLED = re.compile(r'datetime="([^"]+)"')


def stats_ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "n": len(ordered),
    }


def history_latency(site, runs: int) -> dict[str, dict[str, float]]:
    direct = http.client.HTTPConnection("127.0.0.1", site.daphne, timeout=30)
    proxied = http.client.HTTPSConnection("localhost", site.https, context=site.tls(), timeout=30)
    # straight to daphne as nginx would put it (HTTPS already): no redirect
    ways = {
        "direct": (direct, {"X-Forwarded-Proto": "https"}),
        "nginx": (proxied, {"Authorization": f"Bearer {TOKEN}"}),
    }
    times: dict[str, list[float]] = {"direct": [], "nginx": []}
    for n in range(runs + 10):
        for name, (conn, headers) in ways.items():
            t0 = time.perf_counter()
            conn.request("GET", HISTORY, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - t0
            assert response.status == 200, (name, response.status, body[:200])
            if n >= 10:  # warm-up: connections, TLS session, caches
                times[name].append(elapsed)
    return {name: stats_ms(values) for name, values in times.items()}


def frame_latency(site, seconds: float) -> dict[str, float]:
    from websockets.sync.client import connect

    arrivals: dict[str, dict[str, float]] = {"direct": {}, "nginx": {}}
    with contextlib.ExitStack() as opened:
        sockets = {
            "direct": opened.enter_context(
                connect(
                    f"ws://127.0.0.1:{site.daphne}/ws/live/?host={HOST}", origin="http://localhost"
                )
            ),
            "nginx": opened.enter_context(
                connect(
                    f"wss://localhost:{site.https}/ws/live/?host={HOST}",
                    ssl=site.tls(),
                    origin=site.origin,
                    additional_headers={"Authorization": f"Bearer {TOKEN}"},
                )
            ),
        }
        _listen_both(sockets, arrivals, time.monotonic() + seconds)
    both = sorted(set(arrivals["direct"]) & set(arrivals["nginx"]))[1:]  # not the first page
    added = [arrivals["nginx"][k] - arrivals["direct"][k] for k in both]
    # from the sample's own time to the browser: worker, Redis, the hub, the socket(s)
    sampled = {k: datetime.fromisoformat(k).timestamp() for k in both}
    return stats_ms(added) | {
        "frames": len(both),
        "sample_to_socket_direct_ms": stats_ms([arrivals["direct"][k] - sampled[k] for k in both])[
            "median_ms"
        ],
        "sample_to_socket_nginx_ms": stats_ms([arrivals["nginx"][k] - sampled[k] for k in both])[
            "median_ms"
        ],
    }


def _listen_both(sockets, arrivals: dict[str, dict[str, float]], deadline: float) -> None:
    """Note when each frame (keyed by its sample time) reaches each socket, in two threads."""

    def listen(name: str) -> None:
        socket = sockets[name]
        while time.monotonic() < deadline:
            try:
                frame = socket.recv(timeout=1)
            except TimeoutError:
                continue
            arrived = time.time()
            key = SAMPLED.search(frame)
            if key:
                arrivals[name].setdefault(key[1], arrived)

    threads = [threading.Thread(target=listen, args=(name,)) for name in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--interval-ms", type=int, default=250)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with running_site(POLL_INTERVAL_MS=str(args.interval_ms)) as site:
        site.wait_healthy()
        time.sleep(5)  # some history to read
        results = {
            "redis": bool(os.environ.get("REDIS_URL")),
            "history": history_latency(site, args.runs),
            "frame_added_by_nginx": frame_latency(site, args.seconds),
            "load_average": os.getloadavg()[0],
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    h = results["history"]
    f = results["frame_added_by_nginx"]
    print(f"/api/history (500 points), {h['direct']['n']} requests each way, kept alive:")
    for name in ("direct", "nginx"):
        print(f"  {name:<7} median {h[name]['median_ms']:.2f} ms, p90 {h[name]['p90_ms']:.2f} ms")
    added = h["nginx"]["median_ms"] - h["direct"]["median_ms"]
    print(f"  nginx adds {added:.2f} ms at the median")
    print(
        f"live frame, {f['frames']} frames: nginx adds median {f['median_ms']:.2f} ms, "
        f"p90 {f['p90_ms']:.2f} ms (live updates through Redis: {results['redis']})"
    )
    print(
        f"  sample taken -> frame at the socket, median: direct "
        f"{f['sample_to_socket_direct_ms']:.1f} ms, through nginx {f['sample_to_socket_nginx_ms']:.1f} ms"
    )
    print(f"(load average {results['load_average']:.2f} at the end)")


if __name__ == "__main__":
    main()
