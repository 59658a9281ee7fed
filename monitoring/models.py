"""History: hosts, GPUs, samples and their roll-ups, process sessions, events, thresholds, alerts.

Everything is keyed by host so that many workers on many machines can share one database.
GPUs are keyed by UUID, which survives reordering across reboots. Sample columns come from
the metric registry (``monitoring.metrics``) so a metric is declared in one place.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from monitoring.metrics import GPU_METRICS, HOST_METRICS, STORED_GPU_METRICS, STORED_HOST_METRICS
from monitoring.records import EventKind

_COLUMN = {
    "small": lambda: models.SmallIntegerField(null=True, blank=True),
    "int": lambda: models.IntegerField(null=True, blank=True),
    "float": lambda: models.FloatField(null=True, blank=True),
}


class Host(models.Model):
    name = models.CharField(max_length=255, unique=True)
    os = models.CharField(max_length=255, blank=True)
    kernel = models.CharField(max_length=255, blank=True)
    cpu_model = models.CharField(max_length=255, blank=True)
    cores = models.PositiveSmallIntegerField(null=True, blank=True)
    memory_total_mib = models.PositiveIntegerField(null=True, blank=True)
    boot_time = models.DateTimeField(null=True, blank=True)
    driver_version = models.CharField(max_length=64, blank=True)
    cuda_version = models.CharField(max_length=32, blank=True)
    gpu_source = models.CharField(max_length=16, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class LatestSnapshot(models.Model):
    """The newest snapshot of a host as the API serves it, rewritten by its worker each flush.

    What a web process shows when no live message has reached it yet (the first page of a
    freshly started server, a viewer polling over HTTP, the overview of several hosts), and
    how it tells live from stale: ``time`` is when the figures were sampled.
    ``data`` is ``serialize.to_data(snapshot)`` (the documented camelCase schema); ``worker``
    the worker's own counters (``ticks``, ``failedTicks``, ``lateTicks``, ``bufferDepth``,
    ``bufferCapacity``, ``snapshotsDropped``, ``published``, ``publishDropped``).
    """

    host = models.OneToOneField(
        Host, on_delete=models.CASCADE, primary_key=True, related_name="latest"
    )
    time = models.DateTimeField()
    data = models.JSONField()
    worker = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["host__name"]
        verbose_name = "latest snapshot"

    def __str__(self) -> str:
        return f"{self.host_id} at {self.time:%Y-%m-%d %H:%M:%S}"


class Gpu(models.Model):
    STATE_OK = "ok"
    STATE_LOST = "lost"
    STATE_GONE = "gone"  # no longer reported at all (removed, or the driver lost it)
    STATES = [(STATE_OK, "ok"), (STATE_LOST, "lost"), (STATE_GONE, "gone")]

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpus")
    #: The GPU's UUID; for a GPU whose source gives none (a --query-gpu CSV without uuid,
    #: nvtop on AMD, Intel or Apple), ``<host>/pci:<bus id>`` or ``<host>/index:<n>``
    #: (:func:`monitoring.storage.registry.gpu_storage_key`): unique across hosts either way.
    uuid = models.CharField(
        max_length=320,
        unique=True,
        help_text="The GPU's UUID, or host/pci:<bus id> or host/index:<n> for a GPU without one",
    )
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=128, blank=True)
    pci_bus_id = models.CharField(max_length=32, blank=True)
    memory_total_mib = models.PositiveIntegerField(null=True, blank=True)
    power_limit_w = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=STATES, default=STATE_OK)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host__name", "index"]
        verbose_name = "GPU"

    def __str__(self) -> str:
        return f"{self.host.name} GPU {self.index} ({self.name})"

    @property
    def reported_uuid(self) -> str | None:
        """The UUID the GPU reports; None for one keyed by host and bus id or index."""
        return None if "/" in self.uuid else self.uuid


class GpuSample(models.Model):
    """One raw GPU reading (kept ``RETENTION_RAW``, then only in roll-ups)."""

    id = models.BigAutoField(primary_key=True)
    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="samples", db_index=False)
    time = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["gpu", "time"], name="gpusample_gpu_time"),
            models.Index(fields=["time"], name="gpusample_time"),
        ]
        verbose_name = "GPU sample"

    def __str__(self) -> str:
        return f"GPU #{self.gpu_id} at {self.time:%Y-%m-%d %H:%M:%S}"


class HostSample(models.Model):
    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="samples", db_index=False)
    time = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["host", "time"], name="hostsample_host_time"),
            models.Index(fields=["time"], name="hostsample_time"),
        ]
        verbose_name = "host sample"

    def __str__(self) -> str:
        return f"host #{self.host_id} at {self.time:%Y-%m-%d %H:%M:%S}"


class GpuRollup(models.Model):
    """min / mean / max of every GPU metric over one bucket (1 minute, 10 minutes or 1 hour)."""

    MINUTE = 60
    # Between minutes and hours so that a 3.5-20 day history range reads a few thousand rows,
    # not tens of thousands of minutes (issue 4). Rolled up from minutes, kept as long.
    TEN_MINUTES = 600
    HOUR = 3600
    RESOLUTIONS = [(MINUTE, "1 minute"), (TEN_MINUTES, "10 minutes"), (HOUR, "1 hour")]

    id = models.BigAutoField(primary_key=True)
    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="rollups", db_index=False)
    resolution = models.PositiveIntegerField(choices=RESOLUTIONS)
    bucket = models.DateTimeField()
    samples = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["gpu", "resolution", "bucket"], name="gpurollup_unique_bucket"
            )
        ]
        indexes = [models.Index(fields=["resolution", "bucket"], name="gpurollup_res_bucket")]
        verbose_name = "GPU roll-up"

    def __str__(self) -> str:
        return f"GPU #{self.gpu_id} {self.get_resolution_display()} at {self.bucket:%Y-%m-%d %H:%M}"


class HostRollup(models.Model):
    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="rollups", db_index=False)
    resolution = models.PositiveIntegerField(choices=GpuRollup.RESOLUTIONS)
    bucket = models.DateTimeField()
    samples = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["host", "resolution", "bucket"], name="hostrollup_unique_bucket"
            )
        ]
        indexes = [models.Index(fields=["resolution", "bucket"], name="hostrollup_res_bucket")]
        verbose_name = "host roll-up"

    def __str__(self) -> str:
        return (
            f"host #{self.host_id} {self.get_resolution_display()} at {self.bucket:%Y-%m-%d %H:%M}"
        )


# Metric columns, from the registry: raw columns typed per metric, roll-ups as floats.
for _key in STORED_GPU_METRICS:
    GpuSample.add_to_class(_key, _COLUMN[GPU_METRICS[_key].column]())
    for _agg in ("min", "avg", "max"):
        GpuRollup.add_to_class(f"{_key}_{_agg}", models.FloatField(null=True, blank=True))
for _key in STORED_HOST_METRICS:
    HostSample.add_to_class(_key, _COLUMN[HOST_METRICS[_key].column]())
    for _agg in ("min", "avg", "max"):
        HostRollup.add_to_class(f"{_key}_{_agg}", models.FloatField(null=True, blank=True))


class ProcessSession(models.Model):
    """A process seen on a GPU from its first to its last sighting."""

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="sessions")
    pid = models.PositiveIntegerField()
    name = models.CharField(max_length=255, blank=True)
    user = models.CharField(max_length=128, blank=True)
    container = models.CharField(
        max_length=255, blank=True
    )  # "docker abc123def456", "systemd ollama.service"
    command = models.TextField(blank=True)  # redacted
    process_start = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    open = models.BooleanField(default=True)
    peak_memory_mib = models.PositiveIntegerField(null=True, blank=True)
    mean_memory_mib = models.FloatField(null=True, blank=True)
    mean_sm_utilization = models.FloatField(null=True, blank=True)
    samples = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["gpu", "first_seen"], name="session_gpu_first"),
            models.Index(fields=["gpu", "last_seen"], name="session_gpu_last"),
            models.Index(fields=["user", "first_seen"], name="session_user_first"),
        ]
        ordering = ["-first_seen"]
        verbose_name = "GPU process session"

    def __str__(self) -> str:
        return f"{self.name or self.pid} on {self.gpu}"

    @property
    def duration(self):
        return self.last_seen - self.first_seen


class Event(models.Model):
    """Something that happened once on a host (kinds: ``monitoring.records.EventKind``)."""

    KINDS = [(kind.value, kind.label) for kind in EventKind]

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="events")
    gpu = models.ForeignKey(
        Gpu, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    time = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=KINDS)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-time"]
        indexes = [models.Index(fields=["host", "time"], name="event_host_time")]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.host}: {self.get_kind_display()}"


class Threshold(models.Model):
    """A level on a metric that opens an alert when it holds long enough."""

    SCOPE_ALL_GPUS = "all_gpus"
    SCOPE_GPU = "gpu"
    SCOPE_HOST = "host"
    SCOPES = [(SCOPE_ALL_GPUS, "every GPU"), (SCOPE_GPU, "one GPU"), (SCOPE_HOST, "the host")]
    # Metrics a threshold can watch: the registry, plus two the evaluator derives.
    GPU_LOST_METRIC = "gpu_lost"
    LOAD_PER_CORE_METRIC = "load_per_core"
    METRIC_CHOICES = [
        *[
            (k, f"GPU: {m.label} ({m.unit})" if m.unit else f"GPU: {m.label}")
            for k, m in GPU_METRICS.items()
        ],
        *[
            (k, f"Host: {m.label} ({m.unit})" if m.unit else f"Host: {m.label}")
            for k, m in HOST_METRICS.items()
        ],
        (LOAD_PER_CORE_METRIC, "Host: load average per core"),
        (GPU_LOST_METRIC, "GPU lost"),
    ]

    name = models.CharField(max_length=120)
    metric = models.CharField(max_length=32, choices=METRIC_CHOICES)
    scope = models.CharField(max_length=16, choices=SCOPES, default=SCOPE_ALL_GPUS)
    host = models.ForeignKey(
        Host, on_delete=models.CASCADE, null=True, blank=True, help_text="empty: every host"
    )
    gpu = models.ForeignKey(
        Gpu, on_delete=models.CASCADE, null=True, blank=True, help_text="for scope 'one GPU'"
    )
    warning = models.FloatField(null=True, blank=True)
    critical = models.FloatField(null=True, blank=True)
    duration_s = models.PositiveIntegerField(default=30, help_text="how long the level must hold")
    hysteresis = models.FloatField(
        default=0, help_text="how far below the level before the alert clears"
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["metric", "name"]

    def __str__(self) -> str:
        return self.name


class AllowedGpuUser(models.Model):
    """Who may keep a GPU busy without an 'unexpected GPU user' alert."""

    KIND_PROCESS = "process"
    KIND_USER = "user"
    KIND_CONTAINER = "container"
    KINDS = [(KIND_PROCESS, "process name"), (KIND_USER, "user"), (KIND_CONTAINER, "container")]

    kind = models.CharField(max_length=16, choices=KINDS)
    pattern = models.CharField(
        max_length=255, help_text="exact name, or a shell-style pattern such as 'jupyter*'"
    )
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["kind", "pattern"]
        verbose_name = "allowed GPU user"

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.pattern}"


class UnexpectedUserRule(models.Model):
    """Settings of the 'unexpected GPU user' alert (one row; seeded)."""

    enabled = models.BooleanField(default=True)
    busy_for_s = models.PositiveIntegerField(
        default=600, help_text="how long a process may hold the GPU"
    )
    min_memory_mib = models.PositiveIntegerField(
        default=1024, help_text="GPU memory that counts as holding it"
    )
    min_sm_utilization = models.PositiveSmallIntegerField(
        default=10, help_text="or SM use (%) that counts as keeping it busy"
    )

    class Meta:
        verbose_name = "unexpected GPU user rule"

    def __str__(self) -> str:
        return "Unexpected GPU user rule"


class Alert(models.Model):
    WARNING = "warning"
    CRITICAL = "critical"
    SEVERITIES = [(WARNING, "warning"), (CRITICAL, "critical")]

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="alerts")
    gpu = models.ForeignKey(
        Gpu, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    threshold = models.ForeignKey(Threshold, on_delete=models.SET_NULL, null=True, blank=True)
    rule = models.CharField(max_length=32, default="threshold")  # threshold | unexpected_user
    metric = models.CharField(max_length=32, blank=True)
    severity = models.CharField(max_length=8, choices=SEVERITIES)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)
    peak_value = models.FloatField(null=True, blank=True)
    message = models.TextField()
    pid = models.PositiveIntegerField(null=True, blank=True)
    # The evaluator's id of one occurrence (AlertRecord.key): storage updates the same row
    # as the alert escalates and clears, also after a worker restart.
    key = models.CharField(max_length=255, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["host", "started_at"], name="alert_host_started"),
            models.Index(fields=["ended_at"], name="alert_ended"),
        ]

    def __str__(self) -> str:
        return self.message

    @property
    def active(self) -> bool:
        return self.ended_at is None
