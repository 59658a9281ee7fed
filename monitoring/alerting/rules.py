"""The alert rules as plain frozen values, and the one function that loads them from the database.

The worker evaluates every tick and must not query the database to do so (it may be away),
so rules are read into these dataclasses every ``RULES_REFRESH_S`` and the evaluator works
on them alone. Only :func:`load_rules` touches Django, and it imports it lazily so the
evaluator and its tests run without settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fnmatch import fnmatchcase

from monitoring.metrics import GPU_METRICS, HOST_METRICS, canonical
from monitoring.storage.sessions import container_label
from monitoring.telemetry.schema import GpuProcess

log = logging.getLogger(__name__)

# The same names as monitoring.models.Threshold's (a test checks they agree), repeated here so
# that nothing below needs Django.
SCOPE_ALL_GPUS = "all_gpus"
SCOPE_GPU = "gpu"
SCOPE_HOST = "host"
METRIC_GPU_LOST = "gpu_lost"
METRIC_LOAD_PER_CORE = "load_per_core"
ABOVE = "above"
BELOW = "below"

WARNING = "warning"
CRITICAL = "critical"


def metric_target(metric: str) -> str | None:
    """What a metric is read from: ``"gpu"``, ``"host"``, or None for an unknown metric."""
    if metric in GPU_METRICS or metric == METRIC_GPU_LOST:
        return "gpu"
    if metric in HOST_METRICS or metric == METRIC_LOAD_PER_CORE:
        return "host"
    return None


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """One enabled ``Threshold`` row, as the evaluator needs it."""

    id: int
    name: str
    metric: str
    scope: str
    host_name: str | None  # None: every host
    gpu_uuid: str | None  # for scope "gpu"
    warning: float | None
    critical: float | None
    duration_s: float
    hysteresis: float
    direction: str = ABOVE

    def level(self, severity: str) -> float | None:
        return self.critical if severity == CRITICAL else self.warning

    @property
    def identity(self) -> tuple[str, str, str | None, str | None, str]:
        """What an alert of this rule is about; levels and timings may change under an open
        alert, this may not (a rule edited to watch something else starts afresh)."""
        return (self.metric, self.scope, self.host_name, self.gpu_uuid, self.direction)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Who may keep a GPU busy: shell-style patterns (``fnmatch``, case-sensitive as Linux
    names are) on the process name, the user, or the container."""

    processes: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()

    def allows(self, proc: GpuProcess) -> bool:
        if _matches(self.processes, [proc.name]):
            return True
        if _matches(self.users, [proc.user]):
            return True
        return bool(self.containers) and _matches(self.containers, container_names(proc))


def container_names(proc: GpuProcess) -> list[str]:
    """Every name a user may know a process's container by: the label the history shows
    ("docker 1a2b3c4d5e6f", "systemd ollama.service"), its name, full and short id, pod UID."""
    c = proc.container
    if c is None:
        return []
    names = [container_label(c), c.name, c.id, c.id[:12] if c.id else None, c.pod_uid]
    return [n for n in names if n]


def _matches(patterns: tuple[str, ...], names: list[str | None]) -> bool:
    return any(name and fnmatchcase(name, pattern) for pattern in patterns for name in names)


@dataclass(frozen=True, slots=True)
class UnexpectedUserConfig:
    """The ``UnexpectedUserRule`` row (defaults equal the model's)."""

    enabled: bool = True
    busy_for_s: float = 600
    min_memory_mib: int = 1024
    min_sm_utilization: int = 10


@dataclass(frozen=True, slots=True)
class RuleSet:
    thresholds: tuple[ThresholdRule, ...] = ()
    allow: AllowList = AllowList()
    unexpected: UnexpectedUserConfig = UnexpectedUserConfig(enabled=False)


def threshold_problems(
    *,
    metric: str,
    scope: str,
    has_gpu: bool,
    warning: float | None,
    critical: float | None,
    hysteresis: float = 0,
    direction: str = ABOVE,
) -> dict[str, str]:
    """What is wrong with a threshold, by field name (empty: nothing). The admin form shows
    these; the loader skips a row that has any, so a bad row never breaks evaluation."""
    target = metric_target(metric)
    if target is None:
        return {"metric": f"unknown metric {metric!r}"}
    problems: dict[str, str] = {}
    if target == "host" and scope != SCOPE_HOST:
        problems["scope"] = "a host metric: choose the scope 'the host'"
    elif target == "gpu" and scope == SCOPE_HOST:
        problems["scope"] = "a GPU metric: choose 'every GPU' or 'one GPU'"
    if scope == SCOPE_GPU and not has_gpu:
        problems["gpu"] = "choose the GPU this threshold watches"
    if metric != METRIC_GPU_LOST:
        if warning is None and critical is None:
            problems["warning"] = "set a warning level, a critical level, or both"
        elif warning is not None and critical is not None:
            wrong = critical < warning if direction == ABOVE else critical > warning
            if wrong:
                problems["critical"] = "the critical level must be beyond the warning level"
    if hysteresis is not None and hysteresis < 0:
        problems["hysteresis"] = "hysteresis cannot be negative"
    return problems


_warned: set[tuple[int, str]] = set()


def load_rules(host_name: str) -> RuleSet:
    """The enabled rules that apply to ``host_name``, read from the database.

    Raises the database's error when it is away: the caller keeps its previous rules.
    """
    from django.db.models import Q

    from monitoring.models import AllowedGpuUser, Threshold, UnexpectedUserRule

    thresholds = []
    rows = (
        Threshold.objects.filter(enabled=True)
        .filter(Q(host__isnull=True) | Q(host__name=host_name))
        .select_related("host", "gpu")
        .order_by("pk")
    )
    for row in rows:
        metric = canonical(row.metric)  # a row saved under an old name by a script or fixture
        problems = threshold_problems(
            metric=metric,
            scope=row.scope,
            has_gpu=row.gpu_id is not None,
            warning=row.warning,
            critical=row.critical,
            hysteresis=row.hysteresis,
        )
        if problems:
            text = "; ".join(problems.values())
            if (row.pk, text) not in _warned:  # once per problem, not every refresh
                _warned.add((row.pk, text))
                log.warning("threshold %r (id %s) is ignored: %s", row.name, row.pk, text)
            continue
        thresholds.append(
            ThresholdRule(
                id=row.pk,
                name=row.name,
                metric=metric,
                scope=row.scope,
                host_name=row.host.name if row.host_id else None,
                gpu_uuid=row.gpu.uuid if row.scope == SCOPE_GPU else None,
                warning=row.warning,
                critical=row.critical,
                duration_s=float(row.duration_s),
                hysteresis=float(row.hysteresis or 0),
            )
        )

    patterns: dict[str, list[str]] = {kind: [] for kind, _label in AllowedGpuUser.KINDS}
    for kind, pattern in AllowedGpuUser.objects.order_by("pk").values_list("kind", "pattern"):
        if pattern.strip():
            patterns.setdefault(kind, []).append(pattern.strip())
    allow = AllowList(
        processes=tuple(patterns[AllowedGpuUser.KIND_PROCESS]),
        users=tuple(patterns[AllowedGpuUser.KIND_USER]),
        containers=tuple(patterns[AllowedGpuUser.KIND_CONTAINER]),
    )

    row = UnexpectedUserRule.objects.order_by("pk").first()
    unexpected = (
        UnexpectedUserConfig(
            enabled=row.enabled,
            busy_for_s=float(row.busy_for_s),
            min_memory_mib=row.min_memory_mib,
            min_sm_utilization=row.min_sm_utilization,
        )
        if row is not None
        else UnexpectedUserConfig(enabled=False)  # no row: the rule is off
    )
    return RuleSet(thresholds=tuple(thresholds), allow=allow, unexpected=unexpected)
