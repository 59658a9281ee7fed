"""nvidia-smi's own error lines, relayed in its words with what they mean for the user.

When the driver is broken nvidia-smi prints one line instead of a reading ("Failed to
initialize NVML: Driver/library version mismatch", "Unable to determine the device handle
for GPU 0000:09:00.0: Unknown Error" …). Those words are what a user searches for, so they
are kept verbatim; the meaning and the next step come after them. Used by ``--from-file``
(:mod:`capture_file`), the CSV reader and the live nvidia-smi source alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What a kind of failure means for the source: the GPU is gone, the driver is broken
#: (reboot, reload), nothing to monitor, or no right to look.
LOST = "lost"
MISMATCH = "mismatch"
NO_GPU = "no-gpu"
NO_DRIVER = "no-driver"
PERMISSION = "permission"
NVML_FAILED = "nvml-failed"

_GPU_LOST = (
    "the GPU {bus} stopped answering (fallen off the bus, or it needs a reset): the kernel "
    "log (dmesg) usually shows an Xid 79 error; reset it with 'nvidia-smi -r -i {bus}' "
    "or reboot"
)
_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(
            r"Unable to determine the device handle for (?:GPU|gpu)\s*(?P<bus>[0-9A-Fa-f:.]+)"
        ),
        LOST,
        _GPU_LOST,
    ),
    (
        re.compile(
            r"GPU (?P<bus>[0-9A-Fa-f]+:[0-9A-Fa-f:.]+):? .*(?:GPU is lost|fallen off the bus)", re.I
        ),
        LOST,
        _GPU_LOST,
    ),
    (
        re.compile(r"Driver/library version mismatch", re.I),
        MISMATCH,
        "the NVIDIA driver was upgraded without a reboot: the kernel module and the "
        "user-space library differ; reboot (or reload the nvidia kernel module) to see "
        "GPUs again",
    ),
    (
        re.compile(r"couldn't communicate with the NVIDIA driver", re.I),
        NO_DRIVER,
        "the NVIDIA kernel driver is not loaded or not installed for the running kernel "
        "(common after a kernel update): reinstall the driver for this kernel, or reboot",
    ),
    (
        re.compile(r"couldn't find libnvidia-ml\.so|NVML Shared Library Not Found", re.I),
        NO_DRIVER,
        "the NVML library that ships with the driver is missing: the driver is not "
        "installed, or not mounted into this container",
    ),
    (
        re.compile(r"Insufficient Permissions", re.I),
        PERMISSION,
        "this user may not open the NVIDIA devices (/dev/nvidia*): run as a user allowed "
        "to use the GPUs, or give the container access to them",
    ),
    (
        re.compile(r"GPU access blocked by the operating system", re.I),
        PERMISSION,
        "the operating system blocks GPU access (WSL or a hypervisor policy): enable GPU "
        "access for this environment",
    ),
    (
        re.compile(r"^No devices were found", re.I),
        NO_GPU,
        "the driver sees no NVIDIA GPU: none is installed, it is disabled, or this "
        "container was started without GPU access (--gpus)",
    ),
    (
        re.compile(r"Failed to initialize NVML: Unknown Error", re.I),
        NVML_FAILED,
        "NVML could not start; inside a container this usually means it lost access to "
        "/dev/nvidia* (for example after systemd reloaded its cgroups): restart the "
        "container",
    ),
    (
        re.compile(r"Failed to initialize NVML", re.I),
        NVML_FAILED,
        "NVML, the driver's management library, could not start",
    ),
)
# Lines nvidia-smi adds around an error that say nothing on their own.
_CONTEXT = re.compile(r"^(NVML library version: .*|Make sure that the latest NVIDIA driver .*)$")


@dataclass(frozen=True, slots=True)
class SmiError:
    """One error nvidia-smi printed: its words, what kind of failure, and what it means."""

    said: str
    kind: str
    meaning: str

    def __str__(self) -> str:
        return f"nvidia-smi said {self.said!r}: {self.meaning}"


def explain_line(line: str) -> SmiError | None:
    """The known error ``line`` is, or None."""
    text = line.strip()
    for pattern, kind, meaning in _RULES:
        match = pattern.search(text)
        if match:
            bus = match.groupdict().get("bus") or ""
            return SmiError(said=text, kind=kind, meaning=meaning.format(bus=bus.rstrip(":.")))
    return None


def errors_in(text: str) -> list[SmiError]:
    """Every known error line in ``text`` (nvidia-smi may print several, one per GPU)."""
    found = []
    for line in text.splitlines():
        error = explain_line(line)
        if error is not None and error not in found:
            found.append(error)
    return found


def only_errors(text: str) -> list[SmiError]:
    """The errors, if ``text`` is nothing but nvidia-smi error lines; else []."""
    found: list[SmiError] = []
    for line in text.splitlines():
        if not line.strip() or _CONTEXT.match(line.strip()):
            continue
        error = explain_line(line)
        if error is None:
            return []
        if error not in found:
            found.append(error)
    return found


def split_leading_errors(text: str) -> tuple[list[SmiError], str]:
    """Error lines nvidia-smi printed before its output (a GPU it could not open, say),
    and the output after them."""
    found: list[SmiError] = []
    lines = text.splitlines(keepends=True)
    for position, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or _CONTEXT.match(stripped):
            continue
        error = explain_line(stripped)
        if error is None:
            return found, "".join(lines[position:])
        if error not in found:
            found.append(error)
    return found, ""


def summary(errors: list[SmiError]) -> str:
    """One line for one error or several."""
    return "; ".join(str(error) for error in errors)


def as_exception(errors: list[SmiError]) -> Exception:
    """What opening a source that printed ``errors`` raises: the driver mismatch stops the
    search for a source, a broken driver is reported if nothing else opens, and "no devices"
    is only the absence of a GPU."""
    from monitoring.telemetry.errors import DriverError, DriverMismatch, SourceUnavailable

    message = summary(errors)
    kinds = {error.kind for error in errors}
    if MISMATCH in kinds:
        return DriverMismatch(message)
    if kinds == {NO_GPU}:
        return SourceUnavailable(message)
    return DriverError(message)
