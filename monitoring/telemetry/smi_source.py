"""GPU source that reads one long-running ``nvidia-smi -q -x -lms N``.

The monitor must not cause what it monitors: one nvidia-smi call costs ~25 ms of driver
work, so spawning one per tick would itself load the machine. Instead one looping child
prints an XML document every interval; a reader thread splits the stream into documents,
parses each once and keeps the latest, and ``read`` just hands that out. A child that dies
or falls silent is reported (status ``error``, no invented GPUs) and restarted with
exponential back-off; after a successful ``open`` nothing here raises from ``read``.

nvidia-smi's own error lines (a GPU fallen off the bus, a driver mismatch …) reach the user
in its words with their meaning (:mod:`smi_errors`): as the reason ``open`` fails, as the
driver status message when the child dies, and as messages beside the GPUs it still reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from typing import IO

from monitoring.telemetry import schema, smi_errors
from monitoring.telemetry.errors import ParseError, SourceUnavailable
from monitoring.telemetry.smi_xml import parse_smi_xml

_DOC_START = b"<?xml"
_DOC_END = b"</nvidia_smi_log>"
_NOISE_LINES = 8  # last non-XML lines kept to explain a failure
_PERSISTENCE_OFF = (
    "persistence mode is off on GPU {index}: the driver may unload between queries, making "
    "each one slow and the first figures after idle missing; enable it with "
    "'sudo nvidia-smi -pm 1' (or the nvidia-persistenced service)"
)


class NvidiaSmiSource:
    """GpuSource over one looping nvidia-smi child process."""

    name = schema.SOURCE_NVIDIA_SMI
    attributes_processes = False

    def __init__(
        self,
        binary: str = "nvidia-smi",
        interval_ms: int = 1000,
        timeout_s: float = 10.0,
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        grace_s: float = 2.0,
        open_now: bool = True,
    ) -> None:
        self.binary = binary
        self.interval_ms = max(int(interval_ms), 1)
        self.timeout_s = timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None  # supervisor
        self._readers: tuple[threading.Thread, ...] = ()  # current child's stdout/stderr
        self._hung: subprocess.Popen[bytes] | None = None  # child killed for silence
        self._failure = ""  # why the last child ended, shown until its successor answers
        self._latest: schema.GpuReading | None = None
        self._latest_at = 0.0  # monotonic time of the latest document
        self._spawned_at = 0.0
        self._error: str | None = None  # set while the child is dead/silent/restarting
        self._noise: deque[str] = deque(maxlen=_NOISE_LINES)
        self._stderr: deque[str] = deque(maxlen=_NOISE_LINES)
        self._said: list[str] = []  # lines outside documents since the last one, both streams
        self._backoff = backoff_initial_s
        self._opened = False
        #: How many times the child was started (1 after open; grows with restarts).
        self.starts = 0
        if open_now:
            self.open()

    # --- public -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the current child, for tests and diagnostics."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def open(self) -> None:
        """Start the child and wait for its first document; SourceUnavailable if none."""
        if self._opened:
            return
        path = self._resolve()
        self._closing.clear()
        with self._lock:
            self._latest = None
            self._spawn(path, restart=False)
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._latest is None and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first, failure = self._latest, self._error
        if first is None:
            self._stop_child()
            errors = smi_errors.errors_in("\n".join([*self._noise, *self._stderr]))
            if errors:
                raise smi_errors.as_exception(errors)
            said = "; ".join([*self._noise, *self._stderr])
            detail = failure or f"no output from {path} within {self.timeout_s:g} s" + (
                f" ({said})" if said else ""
            )
            raise SourceUnavailable(detail)
        if not first.gpus:
            self._stop_child()
            raise SourceUnavailable("No NVIDIA GPU found")
        self._opened = True
        self._thread = threading.Thread(
            target=self._supervise, args=(path,), name="nvidia-smi-supervisor", daemon=True
        )
        self._thread.start()

    def read(self, *, processes: bool = True, slow: bool = True) -> schema.GpuReading:
        """The latest document's reading, or an error reading; never raises after open."""
        if not self._opened:
            self.open()
        now = time.monotonic()
        with self._lock:
            proc, latest, error = self._proc, self._latest, self._error
            silent = now - max(self._latest_at, self._spawned_at)
            limit = self.timeout_s + self.interval_ms / 1000.0  # one interval is normal
            if proc is not None and proc.returncode is None and silent > limit:
                # Hung (driver stuck, or the child stopped): kill it; the supervisor sees the
                # end and restarts it with back-off.
                error = self._error = f"nvidia-smi printed nothing for {silent:.1f} s"
                self._hung = proc
                _kill(proc)
        if error is None and latest is not None:
            return _copy(latest)
        return self._error_reading(error or "nvidia-smi is not running")

    def close(self) -> None:
        """Stop the child (terminate, then kill after the grace period). Idempotent."""
        self._closing.set()
        self._stop_child()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.grace_s + 1.0)
        self._opened = False

    def __enter__(self) -> NvidiaSmiSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- child process ------------------------------------------------------------------

    def _resolve(self) -> str:
        if os.sep in self.binary:
            if os.path.isfile(self.binary) and os.access(self.binary, os.X_OK):
                return self.binary
            raise SourceUnavailable(f"{self.binary} is not an executable file")
        path = shutil.which(self.binary)
        if path is None:
            raise SourceUnavailable(f"{self.binary!r} not found on PATH")
        return path

    def _spawn(self, path: str, *, restart: bool = True) -> None:
        """Start a child and its reader threads. Caller holds the lock."""
        if restart and self._closing.is_set():
            return  # close() won the race: start nothing it would not stop
        # A restarted child is not trusted until its own first document arrives.
        self._error = (
            f"{self._failure}; restarted it, waiting for its first document" if restart else None
        )
        self._hung = None
        self._noise.clear()
        self._stderr.clear()
        self._said = []
        try:
            proc = subprocess.Popen(
                [path, "-q", "-x", "-lms", str(self.interval_ms)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C goes to us, not straight to it
            )
        except OSError as exc:
            self._proc = None
            self._error = f"cannot start {path}: {exc}"
            self._cond.notify_all()
            return
        self._proc = proc
        self._spawned_at = time.monotonic()
        self.starts += 1
        assert proc.stdout is not None and proc.stderr is not None
        err = threading.Thread(
            target=self._read_stderr, args=(proc.stderr,), name="nvidia-smi-stderr", daemon=True
        )
        out = threading.Thread(
            target=self._read_stdout, args=(proc, proc.stdout, err), name="nvidia-smi-stdout",
            daemon=True,
        )  # fmt: skip
        self._readers = (out, err)
        err.start()
        out.start()

    def _read_stdout(
        self, proc: subprocess.Popen[bytes], stream: IO[bytes], err: threading.Thread
    ) -> None:
        """Split the stream into documents; parse each; record the child's end."""
        with contextlib.suppress(OSError, ValueError):
            self._split(proc, stream)
        with contextlib.suppress(OSError):
            stream.close()
        code = proc.wait()
        err.join(timeout=1.0)  # its last words explain the exit
        with self._cond:
            if self._proc is proc and self._hung is not proc:  # a hang keeps its own message
                self._error = self._death_message(code)
            self._cond.notify_all()

    def _split(self, proc: subprocess.Popen[bytes], stream: IO[bytes]) -> None:
        parts: list[bytes] = []
        inside = False
        for line in iter(stream.readline, b""):
            if not inside:
                start = line.find(_DOC_START)
                if start < 0:
                    text = line.decode("utf-8", "replace").strip()
                    if text:
                        with self._lock:
                            self._noise.append(text)
                            self._said.append(text)
                    continue
                inside, parts = True, [line[start:]]
            else:
                parts.append(line)
            if _DOC_END in line:
                inside = False
                self._take(proc, b"".join(parts))
                parts = []

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                text = line.decode("utf-8", "replace").strip()
                if text:
                    with self._lock:
                        self._stderr.append(text)
                        self._said.append(text)
        with contextlib.suppress(OSError):
            stream.close()

    def _take(self, proc: subprocess.Popen[bytes], document: bytes) -> None:
        try:
            reading = parse_smi_xml(document.decode("utf-8", "replace"), origin=self._origin())
        except ParseError as exc:
            with self._lock:
                self._noise.append(f"unreadable document: {exc.detail}")
            return
        with self._lock:
            said, self._said = self._said[-_NOISE_LINES:], []
        # A GPU nvidia-smi cannot open is an error line beside the others' document.
        errors = smi_errors.errors_in("\n".join(said))
        if errors:
            reading.messages[:0] = [str(error) for error in errors]
            reading.driver.message = smi_errors.summary(errors)
        reading.messages.extend(
            _PERSISTENCE_OFF.format(index=gpu.index)
            for gpu in reading.gpus
            if gpu.persistence_mode is False
        )
        with self._cond:
            if self._proc is not proc:
                return  # a late document from a child already replaced
            self._latest = reading
            self._latest_at = time.monotonic()
            self._error = None
            self._backoff = self.backoff_initial_s
            self._cond.notify_all()

    def _death_message(self, code: int) -> str:
        said = list(self._noise) + list(self._stderr)
        errors = smi_errors.errors_in("\n".join(said))
        detail = (
            f": {smi_errors.summary(errors)}" if errors else f": {' '.join(said)}" if said else ""
        )
        if self._closing.is_set():
            return "nvidia-smi source closed"
        return f"nvidia-smi exited with code {code}{detail}"

    def _supervise(self, path: str) -> None:
        """Restart the child whenever it ends, waiting longer after each quick failure."""
        while not self._closing.is_set():
            proc, readers = self._proc, self._readers
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.wait()
                for thread in readers:
                    thread.join(timeout=2.0)
            if self._closing.is_set():
                return
            with self._lock:
                delay = self._backoff
                self._backoff = min(self._backoff * 2, self.backoff_max_s)
                self._failure = self._error or "nvidia-smi ended"
                self._error = f"{self._failure} (restarting in {delay:g} s)"
            if self._closing.wait(delay):
                return
            with self._lock:
                self._spawn(path)  # on failure _proc is None and the loop backs off again

    def _stop_child(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                _kill(proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.grace_s)

    # --- readings -----------------------------------------------------------------------

    def _origin(self) -> str:
        return f"{self.binary} -q -x -lms {self.interval_ms}"

    def _error_reading(self, message: str) -> schema.GpuReading:
        latest = self._latest
        driver = schema.DriverInfo(
            source=schema.SOURCE_NVIDIA_SMI,
            status=schema.STATUS_ERROR,
            driver_version=latest.driver.driver_version if latest else None,
            cuda_version=latest.driver.cuda_version if latest else None,
            message=message,
        )
        return schema.GpuReading(driver=driver, gpus=[], messages=[message])


def _copy(reading: schema.GpuReading) -> schema.GpuReading:
    """A fresh outer reading per call, so a caller appending messages does not pile them up."""
    return schema.GpuReading(
        driver=reading.driver, gpus=list(reading.gpus), messages=list(reading.messages)
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
