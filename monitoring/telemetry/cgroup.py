"""Tell which container, pod or service a process belongs to, from its cgroup path.

NVML only gives a PID; an operator needs "which container is eating GPU 3". Every runtime
puts its processes in a cgroup whose path names it (``/docker/<id>``,
``…/libpod-<id>.scope``, ``/kubepods/…/pod<uid>/<id>``, ``/system.slice/x.service``), so
the path in ``/proc/<pid>/cgroup`` is enough, without talking to any runtime's API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from monitoring.telemetry.schema import Container

_HEX_ID = r"[0-9a-f]{12,64}"
# <runtime prefix>-<id>.scope, as systemd-managed runtimes name a container's scope.
_SCOPE = re.compile(
    rf"^(docker|libpod|libpod-conmon|cri-containerd|crio|crio-conmon|nerdctl)-({_HEX_ID})\.scope$"
)
_BARE_ID = re.compile(rf"^{_HEX_ID}$")
# Pod segments: cgroupfs "pod<uid>", systemd "kubepods-<qos>-pod<uid_with_underscores>.slice".
_POD = re.compile(r"^(?:kubepods(?:-[a-z]+)*-)?pod([0-9a-fA-F_-]{8,})(?:\.slice)?$")
_SCOPE_RUNTIME = {
    "docker": "docker",
    "libpod": "podman",
    "libpod-conmon": "podman",
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "crio-conmon": "cri-o",
    "nerdctl": "containerd",
}
_LOGIN_SESSION = re.compile(r"^session-[^/]*\.scope$")


def _container_id(segment: str) -> tuple[str, str] | None:
    """(runtime, id) if one path segment names a container."""
    match = _SCOPE.match(segment)
    if match:
        return _SCOPE_RUNTIME[match.group(1)], match.group(2)
    # containerd under a systemd-driver kubelet with a cgroupfs path:
    # "kubepods-burstable-pod<uid>.slice:cri-containerd:<id>".
    parts = segment.split(":")
    if len(parts) == 3 and _BARE_ID.match(parts[2]):
        return _SCOPE_RUNTIME.get(parts[1], parts[1]), parts[2]
    return None


def _kubernetes(segments: list[str]) -> Container | None:
    pod_uid = None
    container_id = None
    for segment in segments:
        pod = _POD.match(segment.split(":")[0])
        if pod:
            pod_uid = pod.group(1).replace("_", "-")
        found = _container_id(segment)
        if found:
            container_id = found[1]
        elif pod_uid and _BARE_ID.match(segment):
            container_id = segment  # cgroupfs driver: /kubepods/burstable/pod<uid>/<id>
    return Container(runtime="kubernetes", id=container_id, pod_uid=pod_uid)


def _lxc(segments: list[str]) -> Container | None:
    for position, segment in enumerate(segments):
        for prefix in ("lxc.payload.", "lxc.monitor."):
            if segment.startswith(prefix) and len(segment) > len(prefix):
                return Container(runtime="lxc", name=segment[len(prefix) :])
        if segment in ("lxc", "lxc.payload") and position + 1 < len(segments):
            return Container(runtime="lxc", name=segments[position + 1])
    return None


def _systemd_unit(segments: list[str]) -> Container | None:
    """The innermost systemd unit, unless it is a plain login session."""
    units = [s for s in segments if s.endswith((".service", ".scope"))]
    if not units:
        return None
    unit = units[-1]
    if _LOGIN_SESSION.match(unit) or unit == "init.scope":
        return None
    return Container(runtime="systemd", name=unit)


def container_from_path(path: str) -> Container | None:
    """The container (or systemd unit) one cgroup path names, or None."""
    segments = [s for s in path.split("/") if s and s != ".."]
    if not segments:
        return None
    if any(s.startswith("kubepods") for s in segments):
        return _kubernetes(segments)
    for position, segment in enumerate(segments):
        found = _container_id(segment)
        if found:
            return Container(runtime=found[0], id=found[1])
        following = segments[position + 1] if position + 1 < len(segments) else ""
        if segment == "docker" and _BARE_ID.match(following):
            return Container(runtime="docker", id=following)
        if segment == "libpod_parent" and following.startswith("libpod-"):
            return Container(runtime="podman", id=following.removeprefix("libpod-"))
        if segment == "containerd.service" and following:
            # Processes a containerd shim placed below the daemon's own unit.
            found = _container_id(following)
            ident = found[1] if found else following
            return Container(runtime="containerd", id=ident if _BARE_ID.match(ident) else None)
    lxc = _lxc(segments)
    if lxc:
        return lxc
    return _systemd_unit(segments)


def _paths(text: str) -> Iterable[str]:
    """Each distinct cgroup path, the unified (v2) hierarchy first."""
    unified: list[str] = []
    legacy: list[str] = []
    for line in text.splitlines():
        fields = line.strip().split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        (unified if hierarchy == "0" and not controllers else legacy).append(path)
    seen: set[str] = set()
    for path in (*unified, *legacy):
        if path not in seen:
            seen.add(path)
            yield path


def container_from_cgroup(text: str) -> Container | None:
    """Parse the content of ``/proc/<pid>/cgroup`` (v1 or v2).

    A runtime's container wins over a bare systemd unit: on hybrid hosts the unified line can
    name the service that started a container while a v1 line names the container itself.
    """
    unit = None
    for path in _paths(text):
        found = container_from_path(path)
        if found is None:
            continue
        if found.runtime != "systemd":
            return found
        unit = unit or found
    return unit


def read_container(pid: int, proc_root: str = "/proc") -> Container | None:
    """The container of a live process, or None (not in one, gone, or unreadable)."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup"), encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, ValueError):
        return None
    return container_from_cgroup(text)


def pid_namespace_hidden(pids: Iterable[int], proc_root: str = "/proc") -> bool:
    """True when NVML reported PIDs but none of them exists here.

    NVML always answers with host PIDs; a collector in a container without the host PID
    namespace sees its own numbering, so not one of them shows up in its /proc.
    """
    wanted = list(pids)
    if not wanted:
        return False
    return not any(os.path.exists(os.path.join(proc_root, str(pid))) for pid in wanted)
