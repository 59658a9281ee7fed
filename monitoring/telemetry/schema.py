"""The one normalised telemetry model: every source fills it, everything downstream reads it.

Units are fixed here so nothing downstream converts: memory in MiB, power in W, temperature
in °C, clocks in MHz, utilization in %, rates in bytes/s, energy in J, times as aware UTC
datetimes. A figure a source does not give is ``None`` and, where the reason is known, the
reason sits in the owning object's ``unsupported`` map under the field's name; it is never
faked as 0 (a fan that really reads 0 % stays 0).

No Django here: providers, parsers and benchmarks import this without a settings module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Values of DriverInfo.source: which telemetry source answered.
SOURCE_NVML = "nvml"
SOURCE_NVIDIA_SMI = "nvidia-smi"
SOURCE_NVTOP = "nvtop"
SOURCE_REPLAY = "replay"
SOURCE_NONE = "none"
SOURCES = (SOURCE_NVML, SOURCE_NVIDIA_SMI, SOURCE_NVTOP, SOURCE_REPLAY, SOURCE_NONE)

# Values of DriverInfo.status.
STATUS_OK = "ok"  # a source answered with at least one GPU
STATUS_NO_GPU = "no-gpu"  # nothing found: the host is still monitored
STATUS_ERROR = "error"  # a driver is there but broken (version mismatch, …): host goes on

# Values of GpuSample.state.
GPU_OK = "ok"
GPU_LOST = "lost"

# Shared reasons for a missing figure, so the UI and the API say the same thing.
NOT_SUPPORTED = "not supported by this GPU"
NOT_REPORTED = "not reported by this source"
NO_FANS = "no fan of its own (passively cooled board)"
MIG_UNAVAILABLE = "not reported by the driver while MIG is enabled"
UNIFIED_MEMORY = "unified memory device: the driver reports no dedicated memory figure"
WDDM_NO_MEMORY = "per-process memory not available under this driver model"


@dataclass(slots=True)
class HostInfo:
    """What machine this is; changes rarely (read once, refreshed on the slow tier)."""

    hostname: str
    os: str
    kernel: str
    cpu_model: str | None
    cores: int  # logical CPUs
    physical_cores: int | None
    boot_time: datetime | None
    memory_total: int | None = None  # MiB


@dataclass(slots=True)
class DriverInfo:
    """Which source answered and what driver stack it found, or plainly why none did."""

    source: str
    status: str
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_version: str | None = None
    message: str | None = None  # shown to the user as is, e.g. "No NVIDIA GPU found"


@dataclass(slots=True)
class Clocks:
    """Current clocks and their maxima, MHz."""

    graphics: int | None = None
    sm: int | None = None
    memory: int | None = None
    video: int | None = None
    graphics_max: int | None = None
    sm_max: int | None = None
    memory_max: int | None = None


@dataclass(slots=True)
class PcieLink:
    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None
    tx_bytes_per_s: float | None = None
    rx_bytes_per_s: float | None = None
    replay_counter: int | None = None


@dataclass(slots=True)
class EccErrors:
    enabled: bool | None = None
    pending_enabled: bool | None = None
    volatile_corrected: int | None = None
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None
    aggregate_uncorrected: int | None = None
    retired_pages_pending: bool | None = None


@dataclass(slots=True)
class Container:
    """Where a process runs, read from its cgroup: what a user needs to find its owner."""

    runtime: str  # docker | podman | containerd | kubernetes | systemd | lxc | cri-o
    id: str | None = None  # container id (full), or None for a systemd unit
    name: str | None = None  # systemd unit, Kubernetes pod UID, or container name when known
    pod_uid: str | None = None


@dataclass(slots=True)
class GpuProcess:
    """One process using one GPU, with who and where it comes from."""

    pid: int
    gpu_index: int
    gpu_uuid: str | None
    name: str | None = None
    used_memory_mib: int | None = field(default=None, metadata={"json": "usedMemoryMiB"})
    type: str = "compute"  # compute | graphics | compute+graphics
    sm_utilization: int | None = None
    memory_utilization: int | None = None
    encoder_utilization: int | None = None
    decoder_utilization: int | None = None
    user: str | None = None
    command: str | None = None  # full command line, secrets redacted
    container: Container | None = None
    start_time: datetime | None = None
    # when this monitor first saw it on this GPU (UTC; set by the collect worker): what the
    # page says where the source gives no start_time (NVML, a replayed capture)
    first_seen: datetime | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MigInstance:
    """A MIG slice of a parent GPU, with its own memory."""

    gpu_instance_id: int
    compute_instance_id: int | None = None
    uuid: str | None = None
    name: str | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    memory_free: int | None = None
    sm_count: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class GpuSample:
    """Everything known about one GPU at one moment."""

    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    vendor: str | None = None  # "nvidia", "amd", "intel", "apple" … (see telemetry.vendor)
    state: str = GPU_OK
    lost_reason: str | None = None
    serial: str | None = None
    vbios: str | None = None
    architecture: str | None = None
    utilization: int | None = None  # % of the sample period a kernel ran (NVML's "GPU")
    memory_utilization: int | None = None  # memory controller busy %
    encoder_utilization: int | None = None
    decoder_utilization: int | None = None
    memory_used: int | None = None  # MiB
    memory_total: int | None = None
    memory_free: int | None = None
    memory_reserved: int | None = None
    temperature: int | None = None  # °C
    temperature_memory: int | None = None
    temperature_slowdown: int | None = None
    temperature_shutdown: int | None = None
    power_usage: float | None = None  # W
    power_limit: float | None = None
    power_limit_enforced: float | None = None
    fans: list[int | None] = field(default_factory=list)  # % per fan
    clocks: Clocks = field(default_factory=Clocks)
    performance_state: str | None = None  # "P0" … "P15"
    clock_event_reasons: list[str] | None = None  # decoded names; [] = none active
    pcie: PcieLink = field(default_factory=PcieLink)
    ecc: EccErrors = field(default_factory=EccErrors)
    mig_mode: bool | None = None
    mig_instances: list[MigInstance] = field(default_factory=list)
    persistence_mode: bool | None = None
    compute_mode: str | None = None
    energy_joules: float | None = None  # counter since driver load
    processes: list[GpuProcess] = field(default_factory=list)
    processes_note: str | None = None  # e.g. processes hidden by the PID namespace
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def fan_speed(self) -> float | None:
        """Mean of the fans that answered; None when the board has none or none answered."""
        readings = [fan for fan in self.fans if fan is not None]
        return sum(readings) / len(readings) if readings else None

    @property
    def identity(self) -> str:
        """Who this GPU is across snapshots: its UUID, else its PCI bus id, else its index
        (a --query-gpu CSV without uuid, nvtop), so a source without UUIDs stays stable."""
        if self.uuid:
            return self.uuid
        return f"pci:{self.pci_bus_id}" if self.pci_bus_id else f"index:{self.index}"

    @property
    def memory_percent(self) -> float | None:
        if self.memory_used is None or not self.memory_total:
            return None
        return 100.0 * self.memory_used / self.memory_total

    def mark_missing(self, field_name: str, reason: str) -> None:
        """Record why a figure is absent (the figure itself stays None)."""
        self.unsupported[field_name] = reason


@dataclass(slots=True)
class DiskUsage:
    mountpoint: str
    device: str
    fstype: str
    total: int  # MiB
    used: int
    free: int
    percent: float


@dataclass(slots=True)
class TemperatureReading:
    sensor: str
    label: str
    current: float
    high: float | None = None
    critical: float | None = None


@dataclass(slots=True)
class FanReading:
    sensor: str
    label: str
    rpm: int


@dataclass(slots=True)
class HostProcess:
    """A busy host process (top by CPU), to show what the host is doing around the GPUs."""

    pid: int
    name: str
    user: str | None
    cpu_percent: float
    memory_rss: int  # MiB
    command: str | None = None  # redacted


@dataclass(slots=True)
class SystemSample:
    """The host around the GPUs at one moment."""

    cpu_usage: float | None = None  # % of all cores
    cpu_per_core: list[float] = field(default_factory=list)
    memory_total: int | None = None  # MiB
    memory_used: int | None = None
    memory_available: int | None = None
    memory_usage: float | None = None  # %
    swap_total: int | None = None
    swap_used: int | None = None
    swap_usage: float | None = None
    load_average: tuple[float, float, float] | None = None
    uptime: float | None = None  # seconds
    disks: list[DiskUsage] = field(default_factory=list)
    disk_read_bytes_per_s: float | None = None
    disk_write_bytes_per_s: float | None = None
    net_recv_bytes_per_s: float | None = None
    net_sent_bytes_per_s: float | None = None
    temperatures: list[TemperatureReading] = field(default_factory=list)
    fans: list[FanReading] = field(default_factory=list)
    top_processes: list[HostProcess] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """One moment of one host: its GPUs, the host itself, and who is using what."""

    timestamp: datetime
    host: HostInfo
    driver: DriverInfo
    gpus: list[GpuSample] = field(default_factory=list)
    system: SystemSample = field(default_factory=SystemSample)
    messages: list[str] = field(default_factory=list)  # plain-language notes for the user

    @property
    def processes(self) -> list[GpuProcess]:
        """Every GPU process across GPUs (each GPU keeps its own list)."""
        return [proc for gpu in self.gpus for proc in gpu.processes]

    @property
    def driver_version(self) -> str | None:
        return self.driver.driver_version

    @property
    def cuda_version(self) -> str | None:
        return self.driver.cuda_version


@dataclass(slots=True)
class GpuReading:
    """What a GPU source returns for one tick: the GPUs and the driver stack that answered."""

    driver: DriverInfo
    gpus: list[GpuSample] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
