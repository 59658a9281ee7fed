"""``GET /metrics``: the latest figures of every host in the Prometheus text format.

Built with ``prometheus-client`` from the stored latest snapshots (one query) and the open
alerts (one grouped query), not from the history tables: a scrape costs one row per host. Names follow Prometheus conventions in base
units, as the field's exporters do (dcgm-exporter, nvidia_gpu_exporter, node_exporter):
``_bytes``, ``_celsius``, ``_watts``, ``_hertz``, ``_ratio`` (0-1), ``_seconds``,
``_joules_total``. GPU series carry ``host``, ``gpu`` (index), ``uuid`` and ``name``
labels; host series ``host``. The worker's own health comes as ``hoofhearted_worker_*``,
the answering web process's live viewers and ignored WebSocket messages as ``hoofhearted_web_*``.

A host whose newest sample is older than ``STALE_AFTER_S`` keeps only its timestamp and
worker counters: stale figures are left out, as Prometheus expects of an exporter, so a
dead worker shows as absent series (and an old ``hoofhearted_snapshot_timestamp_seconds``),
never as a GPU frozen at its last reading. Label values are escaped by prometheus-client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from dashboard.health import freshness, version
from dashboard.methods import read_only
from monitoring.storage.alert_rows import open_alert_counts
from monitoring.storage.latest import latest_snapshots

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MHZ = 1_000_000
GPU_LABELS = ("host", "gpu", "uuid", "name")
PROCESS_LABELS = (*GPU_LABELS, "pid", "process", "user")
Getter = Callable[[dict[str, Any]], Any]


def _at(*path: str, scale: float = 1.0) -> Getter:
    """Read a nested JSON figure (``clocks``, ``sm``) and scale it; None stays None."""

    def read(data: dict[str, Any]) -> float | None:
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value * scale

    return read


def _pstate(gpu: dict[str, Any]) -> float | None:
    state = gpu.get("performanceState")
    if isinstance(state, str) and state[:1] == "P" and state[1:].isdigit():
        return float(state[1:])
    return None


# (suffix, help, read, counter?) for each GPU figure: hoofhearted_gpu_<suffix>.
GPU_FIGURES: tuple[tuple[str, str, Getter, bool], ...] = (
    ("utilization_ratio", "GPU utilization (SM busy), 0-1", _at("utilization", scale=0.01), False),
    (
        "memory_utilization_ratio",
        "Memory controller busy, 0-1",
        _at("memoryUtilization", scale=0.01),
        False,
    ),
    (
        "encoder_utilization_ratio",
        "Encoder busy, 0-1",
        _at("encoderUtilization", scale=0.01),
        False,
    ),
    (
        "decoder_utilization_ratio",
        "Decoder busy, 0-1",
        _at("decoderUtilization", scale=0.01),
        False,
    ),
    ("memory_used_bytes", "Framebuffer memory used", _at("memoryUsed", scale=MIB), False),
    ("memory_free_bytes", "Framebuffer memory free", _at("memoryFree", scale=MIB), False),
    ("memory_total_bytes", "Framebuffer memory in total", _at("memoryTotal", scale=MIB), False),
    (
        "memory_reserved_bytes",
        "Memory the driver reserves",
        _at("memoryReserved", scale=MIB),
        False,
    ),
    ("temperature_celsius", "GPU core temperature", _at("temperature"), False),
    ("memory_temperature_celsius", "GPU memory temperature", _at("temperatureMemory"), False),
    (
        "slowdown_temperature_celsius",
        "Temperature where the GPU slows down",
        _at("temperatureSlowdown"),
        False,
    ),
    ("power_usage_watts", "Power draw", _at("powerUsage"), False),
    ("power_limit_watts", "Power limit", _at("powerLimit"), False),
    (
        "fan_speed_ratio",
        "Mean fan speed, 0-1 (absent on passively cooled boards)",
        _at("fanSpeed", scale=0.01),
        False,
    ),
    ("sm_clock_hertz", "SM clock", _at("clocks", "sm", scale=MHZ), False),
    ("graphics_clock_hertz", "Graphics clock", _at("clocks", "graphics", scale=MHZ), False),
    ("memory_clock_hertz", "Memory clock", _at("clocks", "memory", scale=MHZ), False),
    ("video_clock_hertz", "Video clock", _at("clocks", "video", scale=MHZ), False),
    ("sm_clock_max_hertz", "Highest SM clock", _at("clocks", "smMax", scale=MHZ), False),
    ("performance_state", "Performance state (0 = P0, fastest)", _pstate, False),
    (
        "pcie_transmit_bytes_per_second",
        "PCIe transmit throughput",
        _at("pcie", "txBytesPerS"),
        False,
    ),
    ("pcie_receive_bytes_per_second", "PCIe receive throughput", _at("pcie", "rxBytesPerS"), False),
    (
        "pcie_replay_errors_total",
        "PCIe replays since driver load",
        _at("pcie", "replayCounter"),
        True,
    ),
    ("energy_joules_total", "Energy used since driver load", _at("energyJoules"), True),
    (
        "ecc_volatile_uncorrected_errors_total",
        "Uncorrected ECC errors since boot",
        _at("ecc", "volatileUncorrected"),
        True,
    ),
    (
        "ecc_volatile_corrected_errors_total",
        "Corrected ECC errors since boot",
        _at("ecc", "volatileCorrected"),
        True,
    ),
)

# (suffix, help, read) for each host figure: hoofhearted_host_<suffix>.
HOST_FIGURES: tuple[tuple[str, str, Getter], ...] = (
    ("cpu_usage_ratio", "CPU busy over all cores, 0-1", _at("cpuUsage", scale=0.01)),
    ("memory_total_bytes", "Memory in total", _at("memoryTotal", scale=MIB)),
    ("memory_used_bytes", "Memory used", _at("memoryUsed", scale=MIB)),
    ("memory_available_bytes", "Memory available", _at("memoryAvailable", scale=MIB)),
    ("swap_total_bytes", "Swap in total", _at("swapTotal", scale=MIB)),
    ("swap_used_bytes", "Swap used", _at("swapUsed", scale=MIB)),
    ("load1", "Load average over 1 minute", lambda s: _load(s, 0)),
    ("load5", "Load average over 5 minutes", lambda s: _load(s, 1)),
    ("load15", "Load average over 15 minutes", lambda s: _load(s, 2)),
    ("uptime_seconds", "Time since boot", _at("uptime")),
    ("disk_read_bytes_per_second", "Disk read throughput", _at("diskReadBytesPerS")),
    ("disk_written_bytes_per_second", "Disk write throughput", _at("diskWriteBytesPerS")),
    ("network_receive_bytes_per_second", "Network receive throughput", _at("netRecvBytesPerS")),
    ("network_transmit_bytes_per_second", "Network transmit throughput", _at("netSentBytesPerS")),
)

# (key, suffix, help) of the worker's own counters and gauges: hoofhearted_worker_<suffix>.
WORKER_COUNTERS = (
    ("ticks", "ticks", "Sampling ticks run"),
    ("failedTicks", "failed_ticks", "Ticks that failed (logged, the next one ran)"),
    ("lateTicks", "late_ticks", "Ticks started late"),
    ("skippedTicks", "skipped_ticks", "Ticks skipped to catch up with the clock"),
    ("snapshotsDropped", "snapshots_dropped", "Snapshots dropped from a full buffer"),
    ("published", "published", "Live snapshots published"),
    ("publishDropped", "publish_dropped", "Live snapshots dropped (channel layer away)"),
)
WORKER_GAUGES = (
    ("bufferDepth", "buffer_depth", "Snapshots waiting to be written"),
    ("bufferCapacity", "buffer_capacity", "Snapshots the buffer holds at most"),
)


def _load(system: dict[str, Any], index: int) -> float | None:
    loads = system.get("loadAverage")
    return loads[index] if isinstance(loads, list) and len(loads) > index else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _family(name: str, doc: str, labels: Iterable[str], counter: bool = False) -> Metric:
    kind = CounterMetricFamily if counter else GaugeMetricFamily
    return kind(name, doc, labels=list(labels))


class LatestSnapshotCollector:
    """A prometheus-client collector over rows of ``latest_snapshots()`` (host, time, data)."""

    def __init__(
        self,
        rows: list[Any],
        stale_after_s: float,
        now: float,
        alerts: list[tuple[str, str, str, str, int]] | None = None,
    ) -> None:
        self.rows = rows
        self.stale_after_s = stale_after_s
        self.at = datetime.fromtimestamp(now, UTC)
        self.alerts = alerts or []  # open alerts per (host, severity, rule, metric)

    def collect(self) -> Iterator[Metric]:
        build = InfoMetricFamily("hoofhearted_build", "Hoof Hearted's version")
        build.add_metric([], {"version": version()})
        yield build
        fresh = []
        timestamp = _family(
            "hoofhearted_snapshot_timestamp_seconds", "When the newest sample was taken", ["host"]
        )
        up = _family("hoofhearted_host_up", "1 while the newest sample is fresh", ["host"])
        for row in self.rows:
            sampled = row.time.timestamp()
            timestamp.add_metric([row.host.name], sampled)
            is_fresh = not freshness(row.time, self.at, self.stale_after_s).stale
            up.add_metric([row.host.name], 1.0 if is_fresh else 0.0)
            if is_fresh:
                fresh.append(row)
        yield timestamp
        yield up
        yield from self._alerts()
        yield from self._web()
        yield from self._worker()
        yield from self._hosts(fresh)
        yield from self._gpus(fresh)

    def _alerts(self) -> Iterator[Metric]:
        """Open alerts, counted whatever the host's freshness: one is open until cleared."""
        family = _family(
            "hoofhearted_alerts_open",
            "Alerts open now (thresholds and unexpected GPU users)",
            ["host", "severity", "rule", "metric"],
        )
        for host, severity, rule, metric, count in self.alerts:
            family.add_metric([host, severity, rule, metric], count)
        yield family

    def _web(self) -> Iterator[Metric]:
        """This web process: its live viewers and what their browsers sent that was ignored."""
        from dashboard.consumers import Counters
        from dashboard.hub import get_hub

        viewers = _family("hoofhearted_web_live_viewers", "Live pages open on this web process", ())
        # list() copies under the GIL: the hub's loop may add a viewer meanwhile
        viewers.add_metric([], sum(len(group) for group in list(get_hub().viewers.values())))
        yield viewers
        ignored = _family(
            "hoofhearted_web_websocket_messages_ignored",
            "WebSocket messages from browsers ignored by this web process",
            ["reason"],
            counter=True,
        )
        ignored.add_metric(["malformed"], Counters.ignored)
        ignored.add_metric(["oversized"], Counters.oversized)
        yield ignored
        wants = get_hub().wants
        asks = _family(
            "hoofhearted_web_pcie_wants",
            "Requests for PCIe throughput this web process sent to collectors (a GPU's detail "
            "open, a scrape)",
            ["result"],
            counter=True,
        )
        asks.add_metric(["sent"], wants.sent)
        asks.add_metric(["failed"], wants.failed)
        yield asks

    def _worker(self) -> Iterator[Metric]:
        for key, suffix, doc in WORKER_COUNTERS + WORKER_GAUGES:
            counter = (key, suffix, doc) in WORKER_COUNTERS
            family = _family(f"hoofhearted_worker_{suffix}", doc, ["host"], counter)
            for row in self.rows:
                value = (row.worker or {}).get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family.add_metric([row.host.name], value)
            yield family

    def _hosts(self, rows: list[Any]) -> Iterator[Metric]:
        info = InfoMetricFamily(
            "hoofhearted_host", "The host, its OS and its GPU driver", labels=["host"]
        )
        families = [_family(f"hoofhearted_host_{s}", doc, ["host"]) for s, doc, _ in HOST_FIGURES]
        for row in rows:
            data = row.data
            host_info, driver = data.get("host") or {}, data.get("driver") or {}
            info.add_metric(
                [row.host.name],
                {
                    "os": _text(host_info.get("os")),
                    "kernel": _text(host_info.get("kernel")),
                    "driver_version": _text(driver.get("driverVersion")),
                    "cuda_version": _text(driver.get("cudaVersion")),
                    "source": _text(driver.get("source")),
                },
            )
            system = data.get("system") or {}
            for family, (_, _, read) in zip(families, HOST_FIGURES, strict=True):
                value = read(system)
                if value is not None:
                    family.add_metric([row.host.name], value)
        yield info
        yield from families

    def _gpus(self, rows: list[Any]) -> Iterator[Metric]:
        families = [
            _family(f"hoofhearted_gpu_{suffix}", doc, GPU_LABELS, counter)
            for suffix, doc, _, counter in GPU_FIGURES
        ]
        lost = _family("hoofhearted_gpu_lost", "1 when the driver lost the GPU", GPU_LABELS)
        throttle = _family(
            "hoofhearted_gpu_throttle_reason",
            "1 for each clock event reason active now",
            (*GPU_LABELS, "reason"),
        )
        process_memory = _family(
            "hoofhearted_gpu_process_memory_used_bytes",
            "GPU memory used by each process",
            PROCESS_LABELS,
        )
        for row in rows:
            for gpu in row.data.get("gpus") or ():
                labels = [
                    row.host.name,
                    _text(gpu.get("index")),
                    _text(gpu.get("uuid")),
                    _text(gpu.get("name")),
                ]
                lost.add_metric(labels, 1.0 if gpu.get("state") == "lost" else 0.0)
                for family, (_, _, read, _) in zip(families, GPU_FIGURES, strict=True):
                    value = read(gpu)
                    if value is not None:
                        family.add_metric(labels, value)
                for reason in gpu.get("clockEventReasons") or ():
                    throttle.add_metric([*labels, _text(reason)], 1.0)
                for process in gpu.get("processes") or ():
                    used = process.get("usedMemoryMiB")
                    if isinstance(used, int | float):
                        process_memory.add_metric(
                            [
                                *labels,
                                _text(process.get("pid")),
                                _text(process.get("name")),
                                _text(process.get("user")),
                            ],
                            used * MIB,
                        )
        yield lost
        yield from families
        yield throttle
        yield process_memory


def exposition(
    rows: list[Any],
    stale_after_s: float,
    now: float | None = None,
    alerts: list[tuple[str, str, str, str, int]] | None = None,
) -> bytes:
    """The text exposition of ``rows`` and the open ``alerts`` (what ``/metrics`` serves)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LatestSnapshotCollector(rows, stale_after_s, now or time.time(), alerts))
    return generate_latest(registry)


@read_only
def metrics(request: HttpRequest) -> HttpResponse:
    rows = latest_snapshots()
    ask_for_pcie(rows, settings.STALE_AFTER_S)
    body = exposition(rows, settings.STALE_AFTER_S, alerts=open_alert_counts())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def ask_for_pcie(rows: list[Any], stale_after_s: float, now: float | None = None) -> None:
    """A scrape looks at every GPU's PCIe throughput: ask each live host's collector to read
    it on its next slow ticks (for 30 s; a scrape every 15 s keeps it on). Never raises."""
    from dashboard.hub import get_hub

    at = datetime.fromtimestamp(now or time.time(), UTC)
    wants = get_hub().wants
    for row in rows:
        if freshness(row.time, at, stale_after_s).stale:
            continue  # no collector to ask
        try:
            wants.want_pcie(row.host.name)
        except Exception as exc:  # the figures are served all the same
            log.warning("could not ask %s for PCIe figures: %s", row.host.name, exc)
