"""nvidia-smi -q -x parsing: the real H100 captures, and variants derived from them.

Variants the capture lacks (older drivers, Windows, MIG, errors, two GPUs) are made by
transforming the real document the way those drivers/boards differ; each test says which
real-world case it reproduces.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.telemetry import schema
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.smi_xml import KB, parse_smi_xml
from monitoring.tests.conftest import FIELD, H100, STATES

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
IDLE = (H100 / "smi_qx_idle.xml").read_text()
LOAD = (H100 / "smi_qx_load.xml").read_text()


def _nvml(state: str) -> dict:
    return json.loads((H100 / f"nvml_{state}.json").read_text())["gpus"][0]


def _set(text: str, tag: str, value: str, count: int = 0) -> str:
    """Replace the text of ``<tag>`` (every one, or the first ``count``)."""
    new, n = re.subn(rf"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", text, count=count)
    assert n, tag
    return new


def _rename(text: str, old: str, new: str) -> str:
    """Rename elements whose tag is or starts with ``old`` (open and close tags)."""
    out, n = re.subn(rf"<(/?){re.escape(old)}", rf"<\g<1>{new}", text)
    assert n, old
    return out


def _drop(text: str, tag: str) -> str:
    out, n = re.subn(rf"\s*<{tag}>.*?</{tag}>", "", text, flags=re.S)
    assert n, tag
    return out


# --- the real captures ----------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_it_reads_the_real_h100_document(h100, state):
    reading = parse_smi_xml((h100 / f"smi_qx_{state}.xml").read_text())
    assert reading.driver == schema.DriverInfo(
        source="nvidia-smi", status="ok", driver_version="580.159.04", cuda_version="13.0"
    )
    assert reading.messages == []
    (gpu,) = reading.gpus
    assert gpu.index == 0
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == UUID
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.serial == "1653723046420"
    assert gpu.vbios == "96.00.CF.00.01"
    assert gpu.architecture == "Hopper"
    assert gpu.state == schema.GPU_OK
    assert (gpu.memory_total, gpu.memory_reserved) == (81559, 480)
    # nvidia-smi rounds each figure to MiB on its own, so the parts may miss by 1.
    assert abs(gpu.memory_used + gpu.memory_free + gpu.memory_reserved - gpu.memory_total) <= 1
    assert gpu.power_limit == gpu.power_limit_enforced == 700.0
    assert gpu.performance_state == "P0"
    assert gpu.persistence_mode is True
    assert gpu.compute_mode == "Default"
    assert gpu.mig_mode is False and gpu.mig_instances == []
    assert (gpu.pcie.gen_current, gpu.pcie.gen_max) == (5, 5)
    assert (gpu.pcie.width_current, gpu.pcie.width_max) == (16, 16)
    assert gpu.pcie.replay_counter == 0
    assert gpu.ecc.enabled is True and gpu.ecc.pending_enabled is True
    assert gpu.ecc.volatile_corrected == gpu.ecc.volatile_uncorrected == 0
    assert gpu.ecc.aggregate_corrected == gpu.ecc.aggregate_uncorrected == 0
    assert gpu.ecc.retired_pages_pending is None
    assert gpu.clocks.sm_max == gpu.clocks.graphics_max == 1980
    assert gpu.clocks.memory == gpu.clocks.memory_max == 2619
    assert gpu.energy_joules is None and "energy_joules" in gpu.unsupported


def test_it_reads_the_load_figures(h100):
    (gpu,) = parse_smi_xml(LOAD).gpus
    assert (gpu.utilization, gpu.memory_utilization) == (100, 34)
    assert (gpu.encoder_utilization, gpu.decoder_utilization) == (0, 0)
    assert (gpu.temperature, gpu.temperature_memory) == (68, 64)
    assert gpu.power_usage == 698.67  # the 1 s average, what NVML calls power usage
    assert (gpu.clocks.graphics, gpu.clocks.sm, gpu.clocks.video) == (1395, 1395, 1410)
    assert gpu.throttle_reasons == ["sw_power_cap"]
    assert gpu.pcie.tx_bytes_per_s == 9637 * KB
    assert gpu.pcie.rx_bytes_per_s == 20899 * KB
    assert [(p.pid, p.name, p.used_memory_mib, p.type) for p in gpu.processes] == [
        (447, "python3", 1130, "compute"),
        (448, "python3", 3590, "compute"),
    ]
    for proc in gpu.processes:
        assert (proc.gpu_index, proc.gpu_uuid) == (0, UUID)
        assert proc.gpu_instance_id is None and proc.compute_instance_id is None


def test_it_reads_the_idle_figures():
    (gpu,) = parse_smi_xml(IDLE).gpus
    assert (gpu.utilization, gpu.memory_used, gpu.temperature) == (0, 0, 47)
    assert gpu.throttle_reasons == ["gpu_idle"]
    assert gpu.processes == []


@pytest.mark.parametrize("state", STATES)
def test_it_turns_tlimit_margins_into_the_thresholds_nvml_reports(state):
    # 580 drivers print thresholds as margins to T.Limit; NVML (same moment) gives °C.
    (gpu,) = parse_smi_xml((H100 / f"smi_qx_{state}.xml").read_text()).gpus
    nvml = _nvml(state)
    assert gpu.temperature_slowdown == nvml["temp_slowdown"]["value"] == 89
    assert gpu.temperature_shutdown == nvml["temp_shutdown"]["value"] == 95


def test_it_says_why_the_h100_has_no_fan():
    (gpu,) = parse_smi_xml(LOAD).gpus
    assert gpu.fans == [] and gpu.fan_speed is None
    assert gpu.unsupported["fans"] == schema.NO_FANS


def test_it_keeps_a_fan_at_zero_percent():
    # Consumer boards stop their fans when cool and report 0 %, which is a real reading.
    (gpu,) = parse_smi_xml(_set(LOAD, "fan_speed", "0 %")).gpus
    assert gpu.fans == [0] and gpu.fan_speed == 0
    assert "fans" not in gpu.unsupported


# --- variants of other drivers and boards ---------------------------------------------------


def _old_driver(text: str) -> str:
    """The capture as a ~470-525 driver wrote it: throttle names, power_readings, °C limits."""
    text = _drop(text, "clocks_event_reasons_counters")  # not printed by those drivers
    text = _rename(text, "clocks_event_reason", "clocks_throttle_reason")
    text = _rename(text, "gpu_power_readings", "power_readings")
    text = _drop(text, "gpu_memory_power_readings")
    text = _drop(text, "module_power_readings")
    text = _rename(text, "average_power_draw", "power_draw")
    text = _drop(text, "instant_power_draw")
    text = _rename(text, "requested_power_limit", "power_limit")
    text = _rename(text, "current_power_limit", "enforced_power_limit")
    # The absolute thresholds those drivers print, with NVML's figures for this board.
    text = re.sub(r"<gpu_temp_tlimit>.*?(?=<gpu_target_temperature>)",
                  "<gpu_temp_max_threshold>95 C</gpu_temp_max_threshold>\n"
                  "\t\t\t<gpu_temp_slow_threshold>89 C</gpu_temp_slow_threshold>\n\t\t\t",
                  text, flags=re.S)  # fmt: skip
    text = _set(text, "cuda_version", "11.4")
    return _set(text, "driver_version", "470.256.02")


def test_it_reads_the_element_names_of_older_drivers():
    reading = parse_smi_xml(_old_driver(LOAD))
    (gpu,) = reading.gpus
    assert "clocks_event_reason" not in _old_driver(LOAD)
    assert (reading.driver.driver_version, reading.driver.cuda_version) == ("470.256.02", "11.4")
    assert gpu.throttle_reasons == ["sw_power_cap"]
    assert gpu.power_usage == 698.67
    assert gpu.power_limit == gpu.power_limit_enforced == 700.0
    assert (gpu.temperature_slowdown, gpu.temperature_shutdown) == (89, 95)
    assert "temperature_slowdown" not in gpu.unsupported


def test_it_reads_power_from_instant_draw_when_the_average_is_missing():
    # Some 570+ boards report only instant_power_draw (average N/A): still a figure.
    (gpu,) = parse_smi_xml(_set(LOAD, "average_power_draw", "N/A", count=1)).gpus
    assert gpu.power_usage == 703.14
    assert "power_usage" not in gpu.unsupported


def test_it_reads_the_pre_ampere_ecc_layout():
    # Drivers before the sram/dram split counted single_bit/double_bit with a total.
    old = (
        "<volatile><single_bit><device_memory>3</device_memory><total>3</total></single_bit>"
        "<double_bit><device_memory>1</device_memory><total>1</total></double_bit></volatile>"
    )
    text = re.sub(r"<volatile>.*?</volatile>", old, LOAD, count=1, flags=re.S)
    (gpu,) = parse_smi_xml(text).gpus
    assert (gpu.ecc.volatile_corrected, gpu.ecc.volatile_uncorrected) == (3, 1)
    assert gpu.ecc.aggregate_corrected == 0


def test_it_records_why_figures_are_missing():
    # Consumer boards answer [Not Supported]; a failing sensor answers ERR!; 5xx drivers
    # print deprecation notices in place of some values.
    text = _set(LOAD, "memory_temp", "[Not Supported]")
    text = _set(text, "gpu_temp", "ERR!")
    text = _set(text, "compute_mode", "Requested functionality has been deprecated")
    text = _set(text, "current_link_gen", "Unknown Error")
    (gpu,) = parse_smi_xml(text).gpus
    assert gpu.temperature is None and gpu.temperature_memory is None
    assert gpu.unsupported["temperature"] == "the driver reported an error reading this value"
    assert gpu.unsupported["temperature_memory"] == schema.NOT_SUPPORTED
    assert gpu.unsupported["compute_mode"] == "deprecated by this driver"
    assert gpu.pcie.gen_current is None
    assert gpu.unsupported["pcie.gen_current"] == "the driver reported an unknown error"
    # Without the current temperature the T.Limit margins cannot be turned into °C.
    assert gpu.temperature_slowdown is None and "temperature_slowdown" in gpu.unsupported
    assert gpu.utilization == 100  # the rest of the reading stands


def test_it_marks_a_value_it_cannot_read_instead_of_failing():
    (gpu,) = parse_smi_xml(_set(LOAD, "gpu_util", "lots")).gpus
    assert gpu.utilization is None
    assert "lots" in gpu.unsupported["utilization"]


def test_it_marks_a_lost_gpu():
    # A GPU that fell off the bus: nvidia-smi prints "GPU is lost" in place of its figures.
    text = _set(LOAD, "gpu_util", "[GPU is lost]")
    text = _set(text, "used", "[GPU is lost]", count=1)
    reading = parse_smi_xml(text)
    (gpu,) = reading.gpus
    assert gpu.state == schema.GPU_LOST and gpu.lost_reason == "the GPU is lost"
    assert any("lost" in message for message in reading.messages)


def test_it_reads_windows_processes_without_memory():
    # Windows under WDDM: the driver model is WDDM and per-process memory is N/A.
    text = _set(LOAD, "current_dm", "WDDM")
    text = _set(text, "used_memory", "N/A")
    text = _set(text, "persistence_mode", "N/A")
    text = _set(text, "type", "C+G", count=1)
    (gpu,) = parse_smi_xml(text).gpus
    assert [p.pid for p in gpu.processes] == [447, 448]
    for proc in gpu.processes:
        assert proc.used_memory_mib is None
        assert proc.unsupported["used_memory_mib"] == schema.WDDM_NO_MEMORY
    assert gpu.processes[0].type == "compute+graphics"
    assert gpu.persistence_mode is None


def test_it_trusts_the_gpu_elements_over_attached_gpus():
    # A GPU nvidia-smi cannot query is counted in attached_gpus but left out of the list.
    reading = parse_smi_xml(_set(LOAD, "attached_gpus", "2"))
    assert len(reading.gpus) == 1
    assert reading.messages and "2 GPU(s) are attached but describes 1" in reading.messages[0]


def test_it_reports_no_gpu_when_the_document_lists_none():
    text = _set(LOAD, "attached_gpus", "0")
    reading = parse_smi_xml(re.sub(r'<gpu id="[^"]*">.*</gpu>', "", text, flags=re.S))
    assert reading.gpus == []
    assert reading.driver.status == schema.STATUS_NO_GPU
    assert reading.driver.message == "No NVIDIA GPU found"


def _two_gpus(text: str) -> str:
    """A second board: the <gpu> element again with another UUID, bus id and processes."""
    start, end = text.index("<gpu id="), text.index("</gpu>") + len("</gpu>")
    second = text[start:end].replace(UUID, "GPU-00000000-1111-2222-3333-444444444444")
    second = second.replace("00000000:00:06.0", "00000000:00:07.0")
    second = second.replace("<pid>447</pid>", "<pid>1447</pid>")
    second = second.replace("<pid>448</pid>", "<pid>1448</pid>")
    text = text[:end] + "\n\t" + second + text[end:]
    return _set(text, "attached_gpus", "2")


def test_it_reads_two_gpus_in_index_order():
    reading = parse_smi_xml(_two_gpus(LOAD))
    assert reading.messages == []
    first, second = reading.gpus
    assert (first.index, second.index) == (0, 1)
    assert second.uuid == "GPU-00000000-1111-2222-3333-444444444444"
    assert second.pci_bus_id == "00000000:00:07.0"
    assert [p.pid for p in second.processes] == [1447, 1448]
    assert all(p.gpu_index == 1 and p.gpu_uuid == second.uuid for p in second.processes)
    assert all(p.gpu_index == 0 for p in first.processes)


def test_it_reads_mig_slices_and_says_why_utilization_is_missing():
    # The real A100-SXM4-80GB with four MIG devices (driver 535.54.03).
    reading = parse_smi_xml((FIELD / "a100-sxm4-mig-v12.xml").read_text())
    (gpu,) = reading.gpus
    assert gpu.mig_mode is True and gpu.name == "NVIDIA A100-SXM4-80GB"
    for field in ("utilization", "memory_utilization", "encoder_utilization",
                  "decoder_utilization"):  # fmt: skip
        assert getattr(gpu, field) is None  # N/A under MIG: null, not 0
        assert gpu.unsupported[field] == schema.MIG_UNAVAILABLE
    assert [m.gpu_instance_id for m in gpu.mig_instances] == [3, 4, 5, 6]
    for mig in gpu.mig_instances:
        assert (mig.compute_instance_id, mig.sm_count) == (0, 14)
        assert (mig.memory_total, mig.memory_used, mig.memory_free) == (19968, 12, 19955)
        assert mig.uuid is None and "uuid" in mig.unsupported
    assert (gpu.memory_total, gpu.memory_used, gpu.memory_reserved) == (81920, 50, 869)
    assert gpu.processes == []  # <processes /> : none running, which is not unknown
    assert "processes" not in gpu.unsupported
    # attached_gpus says 4 while one <gpu> is present (the capture was trimmed at its source)
    assert any("says 4 GPU(s) are attached but describes 1" in m for m in reading.messages)


def test_it_ignores_mig_devices_when_mig_is_off():
    (gpu,) = parse_smi_xml(LOAD).gpus
    assert gpu.unsupported.get("utilization") is None


# --- garbage --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        "<html><body>not it</body></html>",
        LOAD[: len(LOAD) // 2],
        LOAD.replace("</nvidia_smi_log>", ""),
        '<?xml version="1.0" encoding="UTF-16"?><nvidia_smi_log/',
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a SYSTEM 'file:///etc/passwd'>]><x>&a;</x>",
        "<nvidia_smi_log><gpu>",
    ],
)
def test_it_raises_parse_error_on_what_is_not_a_document(text):
    with pytest.raises(ParseError) as info:
        parse_smi_xml(text, origin="capture.xml")
    assert info.value.origin == "capture.xml"


def _only_parse_errors(text: str) -> None:
    try:
        reading = parse_smi_xml(text)
    except ParseError as exc:
        assert exc.origin == "nvidia-smi -q -x" and exc.detail
        return
    assert isinstance(reading, schema.GpuReading)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_it_raises_only_parse_error_on_arbitrary_text(text):
    _only_parse_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_it_raises_only_parse_error_on_random_bytes(data):
    _only_parse_errors(data.decode("latin-1"))


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=len(LOAD)))
def test_it_raises_only_parse_error_on_truncated_documents(cut):
    _only_parse_errors(LOAD[:cut])


_VALUES = [m.span(1) for m in re.finditer(r">([^<>]+)</", LOAD)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALUES), st.text(max_size=30))
def test_it_survives_any_single_value_replaced(span, junk):
    # Whatever a future driver writes inside an element, the reading still comes out.
    text = LOAD[: span[0]] + junk.replace("<", "").replace("&", "") + LOAD[span[1] :]
    try:
        reading = parse_smi_xml(text)
    except ParseError:
        return  # junk that breaks the XML itself (e.g. a control character)
    assert len(reading.gpus) == 1


# --- every generation of the schema (issue 10, kind 3) ------------------------------------
# The real captures of monitoring/captures/field/ (DTD v6 to v12) and the H100's (v13): the
# same figures come out whatever each generation calls them.

GENERATIONS = [
    # file, name, util %, memory used/total MiB, °C, W, SM MHz, processes (pid, MiB, type)
    ("driver340-compute-processes.xml", "Tesla K20m", 4, (828, 4799), 32, 48.05, 705,
     [(5495, 98, "compute"), (5494, 98, "compute")]),
    ("tesla-p100-v8.xml", "Tesla P100-PCIE-12GB", 33, (11400, 11567), 31, 24.84, 405, []),
    ("gtx-1070-ti-v10.xml", "GeForce GTX 1070 Ti", 0, (42, 4096), 39, None, 135, []),
    ("windows-gbk-process-name.xml", "GeForce GTX 1060 6GB", 2, (512, 6144), 41, 9.84, None,
     [(1234, None, "compute+graphics"), (5678, None, "compute+graphics")]),
    ("a100-sxm4-mig-v12.xml", "NVIDIA A100-SXM4-80GB", None, (50, 81920), 27, 67.03, 1275, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("file", "name", "util", "memory", "temp", "power", "sm", "procs"),
    GENERATIONS,
    ids=[g[0] for g in GENERATIONS],
)
def test_every_generation_reads_into_the_same_fields(
    file, name, util, memory, temp, power, sm, procs
):
    gpu = parse_smi_xml((FIELD / file).read_bytes().decode("utf-8", "replace")).gpus[0]
    assert (gpu.name, gpu.vendor, gpu.utilization) == (name, "nvidia", util)
    assert (gpu.memory_used, gpu.memory_total) == memory
    assert (gpu.temperature, gpu.power_usage, gpu.clocks.sm) == (temp, power, sm)
    assert [(p.pid, p.used_memory_mib, p.type) for p in gpu.processes] == procs


def test_the_v13_h100_reads_into_the_same_fields_too():
    gpu = parse_smi_xml(LOAD).gpus[0]
    assert (gpu.name, gpu.utilization, gpu.temperature) == ("NVIDIA H100 80GB HBM3", 100, 68)
    assert gpu.power_usage > 600 and gpu.throttle_reasons is not None


def test_driver_375_reads_its_two_gpus_thresholds_and_ecc():
    reading = parse_smi_xml((FIELD / "tesla-p100-v8.xml").read_text())
    first, second = reading.gpus
    assert reading.messages == [] and reading.driver.driver_version == "375.66"
    assert (first.temperature_slowdown, first.temperature_shutdown) == (88, 80)
    assert (first.ecc.enabled, first.ecc.volatile_corrected, first.ecc.retired_pages_pending) == (
        True, 0, False)  # fmt: skip
    assert first.throttle_reasons == ["gpu_idle"]
    assert (second.pci_bus_id, second.utilization, second.memory_used) == (
        "0000:82:00.0", 10, 11800)  # fmt: skip


def test_driver_340s_graphics_processes_merge_with_its_compute_processes():
    # hand-edited from the real v6 capture: the same pid also drawing, as DTD v6 lists it
    text = (
        (FIELD / "driver340-compute-processes.xml")
        .read_text()
        .replace(
            "<accounted_processes>",
            "<graphics_processes><process_info><pid>5495</pid>"
            "<process_name>/opt/ansys_inc/v150/ansys/bin/linx64/ansys.e150</process_name>"
            "<used_memory>98 MiB</used_memory></process_info></graphics_processes>"
            "<accounted_processes>",
        )
    )
    (gpu,) = parse_smi_xml(text).gpus
    assert [(p.pid, p.used_memory_mib, p.type) for p in gpu.processes] == [
        (5495, 98, "compute+graphics"),  # one row, its memory not doubled
        (5494, 98, "compute"),
    ]


def test_an_unknown_process_list_is_not_an_empty_one():
    # hand-built: NVIDIA's own XML writer in nvidia-ml-py (DTD v4) writes the error text
    # inside <processes> when the list cannot be read; no real capture of it is known.
    text = re.sub(r"<processes>.*?</processes>", "<processes>N/A</processes>", LOAD, flags=re.S)
    (gpu,) = parse_smi_xml(text).gpus
    assert gpu.processes == [] and gpu.unsupported["processes"] == schema.NOT_REPORTED
    (idle,) = parse_smi_xml(IDLE).gpus
    assert idle.processes == [] and "processes" not in idle.unsupported


def test_the_memory_usage_of_drivers_before_the_framebuffer_split_is_read():
    # hand-edited from the real v6 capture: no capture of that older element name is known
    text = (FIELD / "driver340-compute-processes.xml").read_text()
    (gpu,) = parse_smi_xml(text.replace("fb_memory_usage>", "memory_usage>")).gpus
    assert (gpu.memory_used, gpu.memory_total) == (828, 4799)
