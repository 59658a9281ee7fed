"""Many live-page viewers in one process: WebSocket clients of ``/ws/live/`` that time each frame.

Run by ``bench_live.py`` (one or two of these processes, apart from the server, so the
clients' own Python does not count as the server's CPU). Each client connects like a browser
tab (an ``Origin`` header of the site), takes the full first frame, then for every later frame
records when it arrived against the sample's time, which the status fragment carries as
``<time datetime="...">``. Both clocks are this machine's, so the latency is wall time from
the worker's sample to the frame in the client's hands: sampling, Redis, the hub, daphne and
the kernel in between.

    .venv/bin/python bench/live_clients.py ws://127.0.0.1:8000/ws/live/?host=x --clients 100 \
        --seconds 30

Prints one JSON object: latencies (s) and frame sizes (bytes) of the frames after the first,
frames per client, and the clients that could not connect or were closed before the end.
Needs only the ``websockets`` package besides the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import resource
import sys
import time
from datetime import datetime
from urllib.parse import urlsplit

import websockets

SAMPLED = re.compile(rb'<time datetime="([^"]+)"')
#: Clients connect in batches this large, a short pause apart (a thousand tabs do not all
#: open in the same millisecond, and the server's accept queue is finite).
CONNECT_BATCH = 50


@functools.lru_cache(maxsize=64)
def sample_time(stamp: str) -> float:
    """The sample's time (epoch seconds) from its ISO 8601 form; parsed once per tick."""
    return datetime.fromisoformat(stamp).timestamp()


class Client:
    def __init__(self) -> None:
        self.frames = 0
        self.first_bytes = 0
        self.latencies: list[float] = []
        self.sizes: list[int] = []
        self.sampled: list[str] = []
        self.closed: str | None = None  # why the server closed it before the end
        self.connected = False
        self.ws = None


async def run_client(url: str, origin: str, client: Client, stop: asyncio.Event, ready) -> None:
    try:
        async with websockets.connect(
            url, origin=origin, max_size=None, open_timeout=60, ping_interval=None
        ) as ws:
            client.connected = True
            client.ws = ws
            ready()
            while True:
                # bytes, not decoded: a thousand viewers in one process must cost it little
                data = await ws.recv(decode=False)
                now = time.time()
                client.frames += 1
                if client.frames == 1:  # the full page at connect: not a live update
                    client.first_bytes = len(data)
                    continue
                client.sizes.append(len(data))
                found = SAMPLED.search(data)
                if found:
                    stamp = found.group(1).decode()
                    client.latencies.append(now - sample_time(stamp))
                    client.sampled.append(stamp)
    except websockets.ConnectionClosedOK:
        if not stop.is_set():
            client.closed = "closed by the server"
    except websockets.ConnectionClosed as exc:
        if not stop.is_set():
            client.closed = f"closed {exc.rcvd.code if exc.rcvd else 'abnormally'}"
    except Exception as exc:  # refused, timed out, reset
        client.closed = f"{type(exc).__name__}: {exc}"
        if not client.connected:
            ready()


async def main_async(args: argparse.Namespace) -> dict:
    parts = urlsplit(args.url)
    origin = f"http://{parts.netloc}"
    stop = asyncio.Event()
    clients = [Client() for _ in range(args.clients)]
    tasks = []
    pending = 0
    all_in = asyncio.Event()

    def ready() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_in.set()

    started = time.monotonic()
    for start in range(0, len(clients), CONNECT_BATCH):
        batch = clients[start : start + CONNECT_BATCH]
        pending += len(batch)
        all_in.clear()
        for client in batch:
            tasks.append(asyncio.ensure_future(run_client(args.url, origin, client, stop, ready)))
        await asyncio.wait_for(all_in.wait(), 120)
    connect_s = time.monotonic() - started
    # Tell the parent all are in (it starts measuring the server now), then run the window.
    print(json.dumps({"connected": sum(c.connected for c in clients)}), flush=True)
    await asyncio.sleep(args.warmup)
    for client in clients:  # what came during warm-up is not counted
        client.latencies.clear()
        client.sizes.clear()
        client.sampled.clear()
    window0 = time.time()
    await asyncio.sleep(args.seconds)
    window1 = time.time()
    stop.set()
    await asyncio.gather(*(c.ws.close() for c in clients if c.ws), return_exceptions=True)
    await asyncio.wait(tasks, timeout=30)
    return {
        "clients": args.clients,
        "connected": sum(c.connected for c in clients),
        "connect_s": round(connect_s, 2),
        "dropped": sum(1 for c in clients if c.closed),
        "dropped_reasons": sorted({c.closed for c in clients if c.closed})[:5],
        "window_s": round(window1 - window0, 2),
        "window": [window0, window1],
        "first_frame_bytes": [c.first_bytes for c in clients if c.connected][:1],
        "frames_per_client": [len(c.latencies) for c in clients],
        "latencies_s": [lat for c in clients for lat in c.latencies],
        "sizes": [size for c in clients for size in c.sizes],
        "sampled": sorted({s for c in clients for s in c.sampled}),
        # per tick: the sample's time -> every viewer's latency (s), to see the spread
        "by_tick": by_tick(clients),
    }


def by_tick(clients: list[Client]) -> dict[str, list[float]]:
    ticks: dict[str, list[float]] = {}
    for client in clients:
        for sampled, latency in zip(client.sampled, client.latencies, strict=True):
            ticks.setdefault(sampled, []).append(latency)
    return ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://HOST:PORT/ws/live/?host=NAME")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
