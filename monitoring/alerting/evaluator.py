"""Thresholds turned into alerts, one snapshot at a time, without flapping.

The worker calls :meth:`AlertEvaluator.evaluate` every tick and stores and publishes what
it returns: only changes (opened, escalated, de-escalated, a new peak at most every
``update_every_s``, cleared), so a steady alert costs nothing per tick.

How a threshold behaves, per target (each GPU, one GPU, or the host):

- It opens when the value is at or beyond a level (warning or critical) *continuously* for
  ``duration_s``; critical if the critical level held that long.
- An open warning escalates to critical once the critical level has held ``duration_s``;
  a critical one steps back to warning once the value stays below ``critical - hysteresis``
  for ``clear_after_s``.
- It clears only once the value stays below ``level - hysteresis`` (the lowest level set)
  for ``clear_after_s``: a value wobbling around a level neither re-opens nor clears it.
- A missing value (None) neither opens, escalates nor clears anything: a GPU that answers
  nothing for a tick is not a GPU that cooled down.
- ``gpu_lost`` opens at once as critical when a GPU is lost and clears when it is found.
- ``load_per_core`` is the 1-minute load average divided by the host's logical cores.

Time is the snapshot's own (``now`` may override it), so a fake clock drives the tests.
No Django here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from monitoring.alerting.rules import (
    ABOVE,
    CRITICAL,
    METRIC_GPU_LOST,
    METRIC_LOAD_PER_CORE,
    SCOPE_GPU,
    WARNING,
    RuleSet,
    ThresholdRule,
    metric_target,
)
from monitoring.alerting.text import describe_gpu, for_duration, format_value, metric_label
from monitoring.alerting.unexpected import (
    StorageKey,
    UnexpectedUserTracker,
    gpu_key,
    reported_uuid,
)
from monitoring.metrics import GPU_METRICS, HOST_METRICS
from monitoring.records import AlertRecord
from monitoring.telemetry import format as fmt
from monitoring.telemetry.schema import GPU_LOST, GPU_OK, GpuSample, Snapshot

RULE_THRESHOLD = "threshold"
CLEAR_AFTER_S = 10.0  # how long a value must stay on the calm side before an alert clears
UPDATE_EVERY_S = 30.0  # a rising peak is re-sent at most this often
HOST_TARGET = "host"


@dataclass(slots=True)
class _Watch:
    """One rule on one target: since when each level holds, and the open alert, if any."""

    rule: ThresholdRule
    target: str  # GPU UUID (or "#index"), or "host"
    where: str  # "GPU 0 (NVIDIA H100 80GB HBM3) on gpu-box", or the host name
    gpu_uuid: str | None  # the GPU's storage key (``Gpu.uuid``), see ``storage_key``
    warning_since: datetime | None = None
    critical_since: datetime | None = None
    calm_since: datetime | None = None  # below the clearing level since
    calmer_since: datetime | None = None  # below critical - hysteresis since
    alert: AlertRecord | None = None
    sent_at: datetime | None = None
    sent_peak: float | None = None


def _beyond(rule: ThresholdRule, value: float, level: float | None) -> bool:
    if level is None:
        return False
    return value >= level if rule.direction == ABOVE else value <= level


def _calm(rule: ThresholdRule, value: float, level: float) -> bool:
    """On the safe side of ``level`` by more than the hysteresis."""
    if rule.direction == ABOVE:
        return value < level - rule.hysteresis
    return value > level + rule.hysteresis


def _held(since: datetime | None, now: datetime, seconds: float) -> bool:
    return since is not None and (now - since).total_seconds() >= seconds


def _higher(rule: ThresholdRule, a: float | None, b: float | None) -> bool:
    """Whether peak ``a`` is worse than ``b``."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if rule.direction == ABOVE else a < b


class AlertEvaluator:
    """Alert state of one host's worker, fed one snapshot per tick."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        clear_after_s: float = CLEAR_AFTER_S,
        update_every_s: float = UPDATE_EVERY_S,
        storage_key: StorageKey = reported_uuid,
    ) -> None:
        """``storage_key(gpu)``: the key a GPU is stored under (``Gpu.uuid``), which per-GPU
        rules name and alerts are linked by: the worker passes its host's
        ``gpu_storage_key``, so a GPU without a UUID (nvtop, a CSV without ``uuid``) is
        matched and linked by host and bus id. Without it, a GPU is known by its UUID only."""
        self._rules = rules
        self._clear_after_s = clear_after_s
        self._update_every_s = update_every_s
        self._storage_key = storage_key
        self._watches: dict[tuple[int, str], _Watch] = {}
        self._orphans: list[tuple[_Watch, str]] = []  # open alerts whose rule went away
        self._unexpected = UnexpectedUserTracker(
            rules.allow,
            rules.unexpected,
            update_every_s=update_every_s,
            storage_key=self._storage_key,
        )

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def update_rules(self, rules: RuleSet) -> None:
        """Take freshly loaded rules. Alerts of a rule that still exists (same metric, scope
        and target) keep their state and follow its new levels; those of a rule deleted,
        disabled or retargeted are cleared on the next :meth:`evaluate`."""
        by_id = {rule.id: rule for rule in rules.thresholds}
        for key, watch in list(self._watches.items()):
            new = by_id.get(watch.rule.id)
            if new is not None and new.identity == watch.rule.identity:
                watch.rule = new
                continue
            del self._watches[key]
            if watch.alert is not None:
                why = "was removed or disabled" if new is None else "now watches something else"
                self._orphans.append((watch, f"its threshold {watch.rule.name!r} {why}"))
        self._rules = rules
        self._unexpected.update(rules.allow, rules.unexpected)

    @property
    def active(self) -> list[AlertRecord]:
        """The alerts open now (current value included), for the live dashboard."""
        mine = [replace(w.alert) for w in self._watches.values() if w.alert is not None]
        return mine + self._unexpected.active

    def evaluate(self, snapshot: Snapshot, now: datetime | None = None) -> list[AlertRecord]:
        now = now or snapshot.timestamp
        out = [self._close(watch, now, why) for watch, why in self._orphans]
        self._orphans.clear()
        host = snapshot.host.hostname
        seen: set[tuple[int, str]] = set()
        for rule in self._rules.thresholds:
            if rule.host_name is not None and rule.host_name != host:
                continue
            for target, where, gpu in self._targets(rule, snapshot):
                key = (rule.id, target)
                seen.add(key)
                watch = self._watches.get(key)
                if watch is None:
                    watch = self._watches[key] = _Watch(
                        rule, target, where, self._storage_key(gpu) if gpu is not None else None
                    )
                watch.where = where
                if rule.metric == METRIC_GPU_LOST:
                    assert gpu is not None
                    change = self._step_lost(watch, gpu, now)
                else:
                    change = self._step(watch, self._value(rule, snapshot, gpu), now)
                if change is not None:
                    out.append(change)
        # targets gone from the snapshot keep an open alert, but not idle timers (bounded state)
        for key in [k for k, w in self._watches.items() if k not in seen and w.alert is None]:
            del self._watches[key]
        out.extend(self._unexpected.evaluate(snapshot, now))
        return out

    # --- what a rule looks at ----------------------------------------------------------------

    def _targets(
        self, rule: ThresholdRule, snapshot: Snapshot
    ) -> Iterator[tuple[str, str, GpuSample | None]]:
        host = snapshot.host.hostname
        target = metric_target(rule.metric)
        if target == "host":
            yield HOST_TARGET, host, None
        elif target == "gpu":
            for gpu in snapshot.gpus:
                if rule.scope == SCOPE_GPU and self._storage_key(gpu) != rule.gpu_uuid:
                    continue
                yield gpu_key(gpu.uuid, gpu.index), describe_gpu(gpu, host), gpu

    @staticmethod
    def _value(rule: ThresholdRule, snapshot: Snapshot, gpu: GpuSample | None) -> float | None:
        if gpu is not None:
            return GPU_METRICS[rule.metric].read(gpu) if gpu.state == GPU_OK else None
        if rule.metric == METRIC_LOAD_PER_CORE:
            load, cores = snapshot.system.load_average, snapshot.host.cores
            return load[0] / cores if load and cores else None
        return HOST_METRICS[rule.metric].read(snapshot.system)

    # --- one rule on one target --------------------------------------------------------------

    def _step(self, watch: _Watch, value: float | None, now: datetime) -> AlertRecord | None:
        if value is None:
            return None
        rule = watch.rule
        watch.warning_since = (
            (watch.warning_since or now) if _beyond(rule, value, rule.warning) else None
        )
        watch.critical_since = (
            (watch.critical_since or now) if _beyond(rule, value, rule.critical) else None
        )
        critical_held = _held(watch.critical_since, now, rule.duration_s)
        warning_held = _held(watch.warning_since, now, rule.duration_s)

        alert = watch.alert
        if alert is None:
            if critical_held:
                return self._open(watch, CRITICAL, value, now)
            if warning_held:
                return self._open(watch, WARNING, value, now)
            return None

        alert.value = value
        if _higher(rule, value, alert.peak_value):
            alert.peak_value = value

        clear_level = rule.warning if rule.warning is not None else rule.critical
        if clear_level is None or _calm(rule, value, clear_level):
            watch.calm_since = watch.calm_since or now
            if clear_level is None or _held(watch.calm_since, now, self._clear_after_s):
                return self._close(watch, now, None)
        else:
            watch.calm_since = None

        if alert.severity == WARNING and critical_held:
            return self._set_severity(watch, CRITICAL, value, now)
        if alert.severity == CRITICAL:
            if rule.critical is None:  # the critical level was removed in admin
                return self._set_severity(watch, WARNING, value, now)
            if rule.warning is not None and _calm(rule, value, rule.critical):
                watch.calmer_since = watch.calmer_since or now
                if _held(watch.calmer_since, now, self._clear_after_s):
                    return self._set_severity(watch, WARNING, value, now)
            else:
                watch.calmer_since = None

        due = watch.sent_at is None or (
            (now - watch.sent_at).total_seconds() >= self._update_every_s
        )
        if due and _higher(rule, alert.peak_value, watch.sent_peak):
            return self._sent(watch, now)
        return None

    def _step_lost(self, watch: _Watch, gpu: GpuSample, now: datetime) -> AlertRecord | None:
        lost = gpu.state == GPU_LOST
        if lost and watch.alert is None:
            reason = f": {gpu.lost_reason}" if gpu.lost_reason else ""
            watch.alert = self._record(watch, CRITICAL, None, now, f"{watch.where} is lost{reason}")
            return self._sent(watch, now)
        if not lost and watch.alert is not None:
            return self._close(watch, now, None)
        return None

    # --- records -----------------------------------------------------------------------------

    def _record(
        self, watch: _Watch, severity: str, value: float | None, now: datetime, message: str
    ) -> AlertRecord:
        rule = watch.rule
        return AlertRecord(
            key=f"{RULE_THRESHOLD}:{rule.id}:{watch.target}",
            rule=RULE_THRESHOLD,
            metric=rule.metric,
            severity=severity,
            started_at=now,
            message=message,
            value=value,
            peak_value=value,
            gpu_uuid=watch.gpu_uuid,
            threshold_id=rule.id,
        )

    def _beyond_message(self, watch: _Watch, severity: str, value: float) -> str:
        rule = watch.rule
        sign = "≥" if rule.direction == ABOVE else "≤"
        return (
            f"{watch.where}: {metric_label(rule.metric)} {format_value(rule.metric, value)} "
            f"{sign} {format_value(rule.metric, rule.level(severity))}"
            f"{for_duration(rule.duration_s)}"
        )

    def _open(self, watch: _Watch, severity: str, value: float, now: datetime) -> AlertRecord:
        watch.calm_since = watch.calmer_since = None
        message = self._beyond_message(watch, severity, value)
        watch.alert = self._record(watch, severity, value, now, message)
        return self._sent(watch, now)

    def _set_severity(
        self, watch: _Watch, severity: str, value: float, now: datetime
    ) -> AlertRecord:
        assert watch.alert is not None
        rule = watch.rule
        watch.calmer_since = None
        watch.alert.severity = severity
        if severity == CRITICAL:
            watch.alert.message = self._beyond_message(watch, severity, value)
        else:
            critical = rule.critical
            back = (
                f", back below the critical {format_value(rule.metric, critical)}"
                if critical is not None
                else ""
            )
            watch.alert.message = (
                f"{watch.where}: {metric_label(rule.metric)} {format_value(rule.metric, value)}"
                f"{back}; still at warning level ({format_value(rule.metric, rule.warning)})"
            )
        return self._sent(watch, now)

    def _close(self, watch: _Watch, now: datetime, why: str | None) -> AlertRecord:
        assert watch.alert is not None
        alert, rule = watch.alert, watch.rule
        lasted = fmt.duration((now - alert.started_at).total_seconds())
        if why is not None:
            text = f"{watch.where}: {metric_label(rule.metric)} alert closed: {why}"
        elif rule.metric == METRIC_GPU_LOST:
            text = f"{watch.where} is back after {lasted}"
        else:
            level = rule.warning if rule.warning is not None else rule.critical
            calm = ""
            if level is not None:
                if rule.direction == ABOVE:
                    calm = f", below {format_value(rule.metric, level - rule.hysteresis)}"
                else:
                    calm = f", above {format_value(rule.metric, level + rule.hysteresis)}"
            text = (
                f"{watch.where}: {metric_label(rule.metric)} back to "
                f"{format_value(rule.metric, alert.value)}{calm}; cleared after {lasted} "
                f"(peak {format_value(rule.metric, alert.peak_value)})"
            )
        alert.ended_at = now
        alert.message = text
        watch.alert = None
        watch.calm_since = watch.calmer_since = None
        watch.sent_at = watch.sent_peak = None
        return replace(alert)

    def _sent(self, watch: _Watch, now: datetime) -> AlertRecord:
        assert watch.alert is not None
        watch.sent_at = now
        watch.sent_peak = watch.alert.peak_value
        return replace(watch.alert)
