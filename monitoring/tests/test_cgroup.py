"""Which container, pod or service a process runs in, from /proc/<pid>/cgroup.

The inputs are the kernel's and the runtimes' own formats, as documented by Docker,
Podman, containerd, CRI-O, the kubelet (cgroupfs and systemd drivers), LXC and systemd.
"""

from __future__ import annotations

import os
from pathlib import Path

from monitoring.telemetry.cgroup import (
    container_from_cgroup,
    pid_namespace_hidden,
    read_container,
)
from monitoring.telemetry.schema import Container

CID = "3f4d1c9b8e2a7f6d5c4b3a2918e7d6c5b4a39281706f5e4d3c2b1a0918273645"
POD = "5b0a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
POD_SYSTEMD = POD.replace("-", "_")

# cgroup v1 as docker (cgroupfs driver) writes it on a v1 host.
DOCKER_V1 = f"""12:pids:/docker/{CID}
11:memory:/docker/{CID}
4:cpu,cpuacct:/docker/{CID}
1:name=systemd:/docker/{CID}
0::/system.slice/containerd.service
"""


def test_it_reads_a_docker_container_on_cgroup_v1() -> None:
    assert container_from_cgroup(DOCKER_V1) == Container(runtime="docker", id=CID)


def test_it_reads_a_docker_container_on_cgroup_v2_with_systemd() -> None:
    text = f"0::/system.slice/docker-{CID}.scope\n"
    assert container_from_cgroup(text) == Container(runtime="docker", id=CID)


def test_it_reads_a_docker_container_running_systemd_inside() -> None:
    text = f"0::/system.slice/docker-{CID}.scope/init.scope\n"
    assert container_from_cgroup(text) == Container(runtime="docker", id=CID)


def test_it_reads_rootful_and_rootless_podman() -> None:
    podman = Container(runtime="podman", id=CID)
    assert container_from_cgroup(f"0::/machine.slice/libpod-{CID}.scope/container\n") == podman
    rootless = f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n"
    assert container_from_cgroup(rootless) == podman
    assert container_from_cgroup(f"0::/libpod_parent/libpod-{CID}\n") == podman


def test_it_reads_containerd_and_crio_outside_kubernetes() -> None:
    assert container_from_cgroup(f"0::/system.slice/cri-containerd-{CID}.scope\n") == Container(
        runtime="containerd", id=CID
    )
    assert container_from_cgroup(f"0::/system.slice/containerd.service/{CID}\n") == Container(
        runtime="containerd", id=CID
    )
    assert container_from_cgroup(f"0::/machine.slice/crio-{CID}.scope\n") == Container(
        runtime="cri-o", id=CID
    )


def test_it_reads_a_kubernetes_pod_with_the_cgroupfs_driver() -> None:
    text = f"0::/kubepods/burstable/pod{POD}/{CID}\n"
    assert container_from_cgroup(text) == Container(runtime="kubernetes", id=CID, pod_uid=POD)


def test_it_reads_a_kubernetes_pod_with_the_systemd_driver() -> None:
    text = (
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        f"kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{CID}.scope\n"
    )
    assert container_from_cgroup(text) == Container(runtime="kubernetes", id=CID, pod_uid=POD)


def test_it_reads_a_guaranteed_pod_on_crio() -> None:
    text = f"0::/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/crio-{CID}.scope\n"
    assert container_from_cgroup(text) == Container(runtime="kubernetes", id=CID, pod_uid=POD)


def test_it_reads_a_pod_placed_below_the_containerd_unit() -> None:
    # containerd 1.x with a cgroupfs-style path under a systemd-driver kubelet (kind, k3s).
    text = (
        "0::/system.slice/containerd.service/"
        f"kubepods-burstable-pod{POD_SYSTEMD}.slice:cri-containerd:{CID}\n"
    )
    assert container_from_cgroup(text) == Container(runtime="kubernetes", id=CID, pod_uid=POD)


def test_it_reads_lxc_containers() -> None:
    assert container_from_cgroup("0::/lxc.payload.trainer\n") == Container(
        runtime="lxc", name="trainer"
    )
    assert container_from_cgroup("4:memory:/lxc/trainer\n") == Container(
        runtime="lxc", name="trainer"
    )


def test_it_names_a_systemd_service() -> None:
    assert container_from_cgroup("0::/system.slice/ollama.service\n") == Container(
        runtime="systemd", name="ollama.service"
    )


def test_it_names_a_systemd_user_unit() -> None:
    text = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/jupyter.service\n"
    assert container_from_cgroup(text) == Container(runtime="systemd", name="jupyter.service")


def test_a_login_session_is_not_a_container() -> None:
    assert container_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") is None
    assert container_from_cgroup("0::/init.scope\n") is None
    assert container_from_cgroup("0::/\n") is None
    assert container_from_cgroup("") is None
    assert container_from_cgroup("garbage without colons") is None


def test_a_container_beats_the_unit_on_a_hybrid_host() -> None:
    text = f"0::/system.slice/containerd.service\n4:memory:/docker/{CID}\n"
    assert container_from_cgroup(text) == Container(runtime="docker", id=CID)


def test_it_reads_this_process_like_its_own_file() -> None:
    text = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    assert read_container(os.getpid()) == container_from_cgroup(text)


def test_it_reads_a_container_under_another_proc_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(f"0::/system.slice/docker-{CID}.scope\n")
    assert read_container(4242, proc_root=str(tmp_path)) == Container(runtime="docker", id=CID)
    assert read_container(4243, proc_root=str(tmp_path)) is None


def test_pids_are_hidden_when_none_exists_here(tmp_path: Path) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert pid_namespace_hidden([pid_max + 1, pid_max + 2])
    assert pid_namespace_hidden([os.getpid()], proc_root=str(tmp_path))
    assert not pid_namespace_hidden([pid_max + 1, os.getpid()])
    assert not pid_namespace_hidden([])
