"""Threshold settings the evaluator would run but that cannot do what was meant.

:func:`monitoring.alerting.rules.threshold_problems` finds what makes a rule unusable (the
loader skips such a row). What is here is refused by the admin form only: a level a
percentage never reaches, a hysteresis that never lets an alert clear, a GPU the scope
ignores or a GPU of another host. A row already saved with one of these keeps running as it
did, so an upgrade never silences a rule someone relies on. No Django here.
"""

from __future__ import annotations

from monitoring.alerting.rules import METRIC_GPU_LOST, SCOPE_GPU, metric_target
from monitoring.alerting.text import format_value, metric_label
from monitoring.metrics import ALL_METRICS

#: The lowest value of every metric a threshold watches (utilizations, temperatures, memory,
#: power, clocks, rates, load): an "above" rule clears only below ``level - hysteresis``,
#: so that must be above this.
LOWEST = 0.0
PERCENT_RANGE = (0.0, 100.0)


def is_percentage(metric: str) -> bool:
    """Whether the registry gives ``metric`` in percent (utilization, memory %, CPU …)."""
    known = ALL_METRICS.get(metric)
    return known is not None and known.unit == "%"


def threshold_mistakes(
    *,
    metric: str,
    scope: str,
    warning: float | None,
    critical: float | None,
    hysteresis: float | None = 0,
    gpu: str | None = None,
    gpu_host: str | None = None,
    host: str | None = None,
) -> dict[str, str]:
    """What a threshold would do differently from what it says, by form field name.

    ``gpu`` is the chosen GPU as a person reads it (``gpu-box GPU 0 (NVIDIA H100)``) and
    ``gpu_host`` its host's name; ``host`` the threshold's host name (None: every host).
    Levels are in the metric's unit (``monitoring.metrics``).
    """
    mistakes: dict[str, str] = {}
    if gpu is not None and scope != SCOPE_GPU:
        mistakes["gpu"] = (
            "a GPU is only for the scope 'one GPU' (this scope would ignore it): "
            "clear the GPU or choose that scope"
        )
    elif gpu is not None and host is not None and gpu_host != host:
        mistakes["gpu"] = (
            f"{gpu} is on host {gpu_host}, not {host}: choose one of {host}'s GPUs, "
            f"or the host {gpu_host}"
        )
    if metric_target(metric) is None or metric == METRIC_GPU_LOST:
        return mistakes
    levels = {"warning": warning, "critical": critical}
    if is_percentage(metric):
        low, high = PERCENT_RANGE
        for field, level in levels.items():
            if level is not None and not low <= level <= high:
                mistakes[field] = (
                    f"{metric_label(metric)} is a percentage, from 0 to 100: "
                    f"a level of {level:g} would {'never' if level > high else 'always'} hold"
                )
    clear_field = "warning" if warning is not None else "critical"
    level = levels[clear_field]
    hysteresis = hysteresis or 0
    if level is None or clear_field in mistakes or level - hysteresis > LOWEST:
        return mistakes
    if level <= LOWEST:
        mistakes[clear_field] = (
            f"a level of {format_value(metric, level)} holds at every value and its alert "
            f"could never clear ({metric_label(metric)} is never below {LOWEST:g}): "
            "set a level above 0"
        )
    else:
        mistakes["hysteresis"] = (
            f"an alert clears only below the {clear_field} level minus the hysteresis "
            f"({format_value(metric, level - hysteresis)}), and {metric_label(metric)} is "
            f"never below {LOWEST:g}: the hysteresis must be smaller than the {clear_field} "
            f"level, {format_value(metric, level)}"
        )
    return mistakes
