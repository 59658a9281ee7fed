"""Play a directory of real NVML captures as if it were a live GPU.

For demos, development and tests on machines without a GPU. There is no second parser: the
captures are answered by :class:`~monitoring.telemetry.nvml_capture.CapturedNvml` and read
by the real :class:`~monitoring.telemetry.nvml_source.NvmlSource`, so replay exercises the
code a live GPU would. Processes carry who ran them on the capture machine (the capture's
``resolved`` data), since this host's /proc knows nothing of them.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitoring.telemetry import schema
from monitoring.telemetry.errors import DriverMismatch, ParseError, SourceUnavailable
from monitoring.telemetry.nvml_capture import CapturedNvml, capture_path
from monitoring.telemetry.nvml_source import (
    COUNTER_INTERVAL_S,
    PCIE_INTERVAL_S,
    PCIE_WANTED_S,
    READ_FAILED,
    NvmlSource,
)

DEFAULT_REPLAY_DIR = Path(__file__).resolve().parents[1] / "captures" / "nvidia" / "h100"
_PREFIX = "nvml_"


def list_states(directory: str | Path) -> list[str]:
    """The states captured in ``directory`` (``nvml_idle.json`` -> ``idle``), sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.stem[len(_PREFIX) :] for p in directory.glob(f"{_PREFIX}*.json"))


def _command_joiner() -> Callable[[list[str]], str]:
    """The attribution module's redaction when present, else a plain shell-quoted join."""
    try:
        from monitoring.telemetry.redact import redact_command
    except ImportError:
        return shlex.join
    return redact_command


def _once_per_command(join: Callable[[list[str]], str]) -> Callable[[list[str]], str]:
    """``join``, remembering each command line's result: a capture's command lines never
    change, so each is redacted once (as the live attributor does once per process)."""
    joined: dict[tuple[str, ...], str] = {}

    def join_once(argv: list[str]) -> str:
        key = tuple(argv)
        text = joined.get(key)
        if text is None:
            text = joined[key] = join(argv)
        return text

    return join_once


def attribute_from_capture(
    gpus: list[schema.GpuSample], nvml: CapturedNvml, join: Callable[[list[str]], str] | None = None
) -> None:
    """Fill name/user/command of each process from what the capture machine resolved."""
    join = join or _command_joiner()
    for gpu in gpus:
        for proc in gpu.processes:
            seen = nvml.resolved(gpu.index, proc.pid)
            if not seen:
                continue
            proc.name = seen.get("name") or proc.name
            proc.user = seen.get("user") or proc.user
            argv = seen.get("cmd")
            if argv:
                proc.command = join([str(arg) for arg in argv])


class ReplaySource:
    """A GpuSource answering from captures: one state, or alternating states every
    ``switch_every_s`` seconds so a demo moves (``state=None``: all, in name order;
    ``"load,idle"``: those, in that order)."""

    name = schema.SOURCE_REPLAY
    attributes_processes = True

    def __init__(
        self,
        directory: str | Path = DEFAULT_REPLAY_DIR,
        state: str | None = None,
        *,
        charge_cost: bool = False,
        switch_every_s: float = 30,
        clock: Callable[[], float] = time.monotonic,
        counter_interval_s: float = COUNTER_INTERVAL_S,
        pcie_interval_s: float = PCIE_INTERVAL_S,
    ) -> None:
        self.directory = Path(directory)
        states = list_states(self.directory)
        if not states:
            raise SourceUnavailable(
                f"no NVML capture (nvml_<state>.json) to replay in {self.directory}"
            )
        wanted = [name for name in state.split(",") if name] if state else states
        for name in wanted:
            if name not in states:
                raise SourceUnavailable(
                    f"no capture of state {name!r} in {self.directory} (it has: {', '.join(states)})"
                )
        self.states = wanted
        self.switch_every_s = switch_every_s
        self._clock = clock
        self._start = clock()
        self._join = _once_per_command(_command_joiner())
        self._nvml: list[CapturedNvml] = []
        self._sources: list[NvmlSource] = []
        self._fresh: list[bool] = []
        try:
            for name in self.states:
                path = capture_path(self.directory, name)
                try:
                    nvml = CapturedNvml(json.loads(path.read_text()), charge_cost=charge_cost)
                except (OSError, ValueError, TypeError, KeyError) as exc:
                    raise SourceUnavailable(f"cannot replay {path}: {exc}") from exc
                self._nvml.append(nvml)
                self._sources.append(
                    NvmlSource(
                        nvml,
                        clock=clock,
                        counter_interval_s=counter_interval_s,
                        pcie_interval_s=pcie_interval_s,
                    )
                )
                self._fresh.append(True)
        except Exception:
            self.close()
            raise

    @property
    def state(self) -> str:
        """The state playing now."""
        return self.states[self._current()]

    def _current(self) -> int:
        if len(self._sources) == 1 or self.switch_every_s <= 0:
            return 0
        elapsed = self._clock() - self._start
        return int(elapsed // self.switch_every_s) % len(self._sources)

    def want_pcie(self, seconds: float = PCIE_WANTED_S, gpu: str | None = None) -> bool:
        """As :meth:`NvmlSource.want_pcie`, for every replayed state."""
        found = [source.want_pcie(seconds, gpu) for source in self._sources]
        return any(found)

    def pcie_wanted(self, now: float, gpu: str | None = None) -> bool:
        return any(source.pcie_wanted(now, gpu) for source in self._sources)

    def read(self, *, processes: bool = True, slow: bool = True) -> schema.GpuReading:
        i = self._current()
        # a state's first reading lists its processes, so a switch never shows none
        processes = processes or self._fresh[i]
        self._fresh[i] = False
        reading = self._sources[i].read(processes=processes, slow=slow)
        if processes:
            attribute_from_capture(reading.gpus, self._nvml[i], self._join)
        reading.driver.source = schema.SOURCE_REPLAY
        reading.messages.insert(
            0,
            f"Replaying captured GPU telemetry ({self.states[i]}) from {self.directory}: "
            "not a live GPU.",
        )
        return reading

    def close(self) -> None:
        for source in self._sources:
            source.close()


def read_nvml_capture(data: Any, *, origin: str = "capture") -> schema.GpuReading:
    """One reading of a single NVML capture (``collect --from-file nvml_load.json``)."""
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise ParseError(origin, "not an NVML capture: no 'gpus' list")
    if "count" not in data:
        data = {**data, "count": {"value": len(data["gpus"])}}
    try:
        nvml = CapturedNvml(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ParseError(origin, f"not an NVML capture: {exc}") from None
    try:
        source = NvmlSource(nvml)
    except DriverMismatch as exc:
        return schema.GpuReading(
            driver=schema.DriverInfo(
                source=schema.SOURCE_REPLAY, status=schema.STATUS_ERROR, message=str(exc)
            )
        )
    except SourceUnavailable as exc:
        raise ParseError(origin, str(exc)) from None
    try:
        reading = source.read(processes=True, slow=True)
    finally:
        source.close()
    for gpu in reading.gpus:
        if gpu.lost_reason and gpu.lost_reason.startswith(READ_FAILED):
            raise ParseError(
                origin, f"GPU {gpu.index} of the capture is malformed: {gpu.lost_reason}"
            )
        # A malformed record costs its own figures only, as a failing call does live.
        broken = sorted(k for k, why in gpu.unsupported.items() if why.startswith(READ_FAILED))
        if broken:
            reading.messages.append(
                f"{origin}: GPU {gpu.index}: malformed record for {', '.join(broken)}"
            )
    attribute_from_capture(reading.gpus, nvml)
    reading.driver.source = schema.SOURCE_REPLAY
    return reading
