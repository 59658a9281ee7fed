"""The errors telemetry raises: typed, each naming what failed, none of them a crash."""

from __future__ import annotations


class TelemetryError(Exception):
    """Base for anything a telemetry source reports instead of a reading."""


class SourceUnavailable(TelemetryError):
    """This source cannot run here (no library, no binary, no GPU): try the next one."""


class DriverError(SourceUnavailable):
    """A driver is there but answers with an error (a GPU fallen off the bus, no permission,
    NVML failing to start): try the next source, and if none opens, report this, not "no GPU"."""


class DriverMismatch(TelemetryError):
    """The kernel driver and the user-space library differ: a driver upgrade awaits a reboot."""


class ParseError(TelemetryError):
    """Input a parser cannot make sense of; ``origin`` names the file or command it came from."""

    def __init__(self, origin: str, detail: str) -> None:
        self.origin = origin
        self.detail = detail
        super().__init__(f"{origin}: {detail}")


#: What a parser says of JSON nested deeper than ``json.loads`` goes (about 1000 levels):
#: no real capture nests more than a few.
TOO_DEEP = "nested too deeply to be a capture"
