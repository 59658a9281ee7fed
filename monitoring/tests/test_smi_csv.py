"""nvidia-smi --query-gpu / --query-compute-apps CSV: the real captures, variants, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.telemetry import schema
from monitoring.telemetry.capture_file import read_capture_bytes
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.smi_csv import (
    EXTRA_FIELDS,
    QUERY_GPU_FIELDS,
    attach_processes,
    canonical,
    looks_like_compute_apps_csv,
    looks_like_query_gpu_csv,
    parse_compute_apps_csv,
    parse_query_gpu_csv,
)
from monitoring.telemetry.smi_xml import parse_smi_xml
from monitoring.tests.conftest import FIELD, H100, STATES

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
LOAD_CSV = (H100 / "smi_csv_load.csv").read_text()
LOAD_NOUNITS = (H100 / "smi_csv_nounits_load.csv").read_text()
APPS_LOAD = (H100 / "smi_apps_load.csv").read_text()


def test_the_default_query_is_the_one_the_capture_used():
    header = (H100 / "smi_csv_load.csv").read_text().splitlines()[0]
    assert [canonical(name) for name in header.split(", ")] == [
        canonical(field) for field in QUERY_GPU_FIELDS
    ]
    assert len(EXTRA_FIELDS) == len((H100 / "smi_csv_extra_load.csv").read_text().split(","))


@pytest.mark.parametrize("kind", ["smi_csv", "smi_csv_nounits"])
@pytest.mark.parametrize("state", STATES)
def test_it_reads_the_real_query_gpu_files(kind, state):
    reading = parse_query_gpu_csv((H100 / f"{kind}_{state}.csv").read_text())
    assert reading.driver.status == schema.STATUS_OK
    assert reading.driver.driver_version == "580.159.04"
    (gpu,) = reading.gpus
    assert (gpu.index, gpu.uuid, gpu.name) == (0, UUID, "NVIDIA H100 80GB HBM3")
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.memory_total == 81559
    assert gpu.power_limit == 700.0
    assert gpu.clocks.memory == 2619
    assert gpu.performance_state == "P0"
    assert gpu.fans == [] and gpu.unsupported["fans"] == schema.NO_FANS


def test_it_reads_units_and_header_names_that_differ_from_the_query():
    # Asked for clocks.sm / clocks.mem; the header says clocks.current.sm [MHz] etc.
    (gpu,) = parse_query_gpu_csv(LOAD_CSV).gpus
    assert (gpu.utilization, gpu.memory_utilization) == (100, 34)
    assert (gpu.memory_used, gpu.memory_free, gpu.temperature) == (4735, 76345, 68)
    assert gpu.power_usage == 698.59
    assert gpu.clocks.sm == 1410


def test_it_reads_the_headerless_file_with_the_field_list():
    (gpu,) = parse_query_gpu_csv(LOAD_NOUNITS, fields=QUERY_GPU_FIELDS).gpus
    assert (gpu.utilization, gpu.memory_used, gpu.power_usage, gpu.clocks.sm) == (
        100, 4735, 698.29, 1395,
    )  # fmt: skip


def test_it_maps_columns_by_the_fields_given():
    # Same row, other order: the caller's field list decides what each column means.
    fields = ["uuid", "index", "memory.used", "clocks.current.sm"]
    text = f"{UUID}, 3, 4735, 1395\n"
    (gpu,) = parse_query_gpu_csv(text, fields=fields).gpus
    assert (gpu.index, gpu.uuid, gpu.memory_used, gpu.clocks.sm) == (3, UUID, 4735, 1395)


@pytest.mark.parametrize("state", STATES)
def test_it_reads_the_extra_fields(state):
    (gpu,) = parse_query_gpu_csv(
        (H100 / f"smi_csv_extra_{state}.csv").read_text(), fields=EXTRA_FIELDS
    ).gpus
    (xml_gpu,) = parse_smi_xml((H100 / f"smi_qx_{state}.xml").read_text()).gpus
    assert gpu.index == 0  # no index column: rows come in index order
    assert gpu.temperature_memory == xml_gpu.temperature_memory
    assert (gpu.encoder_utilization, gpu.decoder_utilization) == (0, 0)
    assert gpu.power_limit_enforced == 700.0
    assert gpu.clocks.sm_max == 1980
    assert gpu.throttle_reasons == xml_gpu.throttle_reasons  # hex mask vs Active lines


@pytest.mark.parametrize("state", STATES)
def test_the_xml_and_csv_views_of_the_same_moment_agree(state):
    (xml_gpu,) = parse_smi_xml((H100 / f"smi_qx_{state}.xml").read_text()).gpus
    for kind in ("smi_csv", "smi_csv_nounits"):
        (csv_gpu,) = parse_query_gpu_csv((H100 / f"{kind}_{state}.csv").read_text()).gpus
        assert csv_gpu.uuid == xml_gpu.uuid
        assert csv_gpu.pci_bus_id == xml_gpu.pci_bus_id
        for field in ("memory_total", "memory_used", "memory_free"):
            assert abs(getattr(csv_gpu, field) - getattr(xml_gpu, field)) <= 1, field
    for kind in ("smi_apps", "smi_apps_nounits"):
        procs = parse_compute_apps_csv((H100 / f"{kind}_{state}.csv").read_text())
        assert sorted((p.pid, p.used_memory_mib, p.gpu_uuid) for p in procs) == sorted(
            (p.pid, p.used_memory_mib, p.gpu_uuid) for p in xml_gpu.processes
        )


def test_it_reads_the_real_compute_apps_files():
    procs = parse_compute_apps_csv(APPS_LOAD)
    assert [(p.pid, p.name, p.used_memory_mib, p.gpu_uuid) for p in procs] == [
        (448, "python3", 3590, UUID),
        (447, "python3", 1130, UUID),
    ]
    assert all(p.type == "compute" and p.gpu_index == -1 for p in procs)


@pytest.mark.parametrize("name", ["smi_apps_idle.csv", "smi_apps_nounits_idle.csv"])
def test_it_reads_no_processes_from_header_only_or_empty_files(name):
    text = (H100 / name).read_text()
    assert parse_compute_apps_csv(text) == []


def test_it_attaches_processes_to_gpus_by_uuid():
    reading = parse_query_gpu_csv(LOAD_CSV)
    procs = parse_compute_apps_csv(APPS_LOAD)
    orphan = APPS_LOAD.splitlines()[1].replace(UUID, "GPU-00000000-0000-0000-0000-000000000000")
    procs += parse_compute_apps_csv(orphan.replace("448", "9999"), fields=None)
    attach_processes(reading, procs)
    (gpu,) = reading.gpus
    assert sorted(p.pid for p in gpu.processes) == [447, 448]
    assert all(p.gpu_index == 0 for p in gpu.processes)
    assert reading.messages and "9999" in reading.messages[0]


def test_it_resolves_gpu_index_when_given_the_uuid_map():
    procs = parse_compute_apps_csv(APPS_LOAD, uuid_to_index={UUID: 0})
    assert [p.gpu_index for p in procs] == [0, 0]


def test_it_reads_windows_processes_without_memory():
    # Under WDDM nvidia-smi prints [N/A] for used_gpu_memory (its own help says so).
    text = APPS_LOAD.replace("3590 MiB", "[N/A]").replace("1130 MiB", "[N/A]")
    procs = parse_compute_apps_csv(text)
    assert [p.used_memory_mib for p in procs] == [None, None]
    assert all(p.unsupported["used_memory_mib"] == schema.WDDM_NO_MEMORY for p in procs)


def test_it_keeps_a_process_name_that_contains_a_comma():
    text = APPS_LOAD.replace("448, python3,", "448, python3 train.py --tag a, b,")
    procs = parse_compute_apps_csv(text)
    assert procs[0].name == "python3 train.py --tag a, b"
    assert procs[0].used_memory_mib == 3590


def test_it_records_why_csv_figures_are_missing():
    # Consumer boards answer [Not Supported]; a failing sensor ERR!.
    text = LOAD_CSV.replace(", 68, ", ", [Not Supported], ").replace("698.59 W", "ERR!")
    (gpu,) = parse_query_gpu_csv(text).gpus
    assert gpu.temperature is None and gpu.unsupported["temperature"] == schema.NOT_SUPPORTED
    assert gpu.power_usage is None and "error" in gpu.unsupported["power_usage"]


def test_it_keeps_a_fan_at_zero_percent():
    (gpu,) = parse_query_gpu_csv(LOAD_CSV.replace("[N/A]", "0 %")).gpus
    assert gpu.fans == [0] and "fans" not in gpu.unsupported


def test_it_reads_two_gpus():
    row = LOAD_CSV.splitlines()[1]
    second = row.replace("0, GPU-997b", "1, GPU-997c").replace(":06.0", ":07.0")
    reading = parse_query_gpu_csv(LOAD_CSV + second + "\n")
    assert [(g.index, g.pci_bus_id) for g in reading.gpus] == [
        (0, "00000000:00:06.0"), (1, "00000000:00:07.0"),
    ]  # fmt: skip


def test_it_reports_no_gpu_for_no_devices():
    assert parse_query_gpu_csv("No devices were found\n").driver.status == schema.STATUS_NO_GPU
    header_only = LOAD_CSV.splitlines()[0] + "\n"
    assert parse_query_gpu_csv(header_only).gpus == []


def test_it_names_the_line_with_the_wrong_column_count():
    text = LOAD_CSV + "1, GPU-x, only three\n"
    with pytest.raises(ParseError, match="line 3: 3 columns, expected 17"):
        parse_query_gpu_csv(text, origin="gpus.csv")


def test_it_needs_the_field_list_for_an_unknown_headerless_file():
    extra = (H100 / "smi_csv_extra_load.csv").read_text()
    with pytest.raises(ParseError, match="pass the field list"):
        parse_query_gpu_csv(extra)


def test_an_unreadable_index_costs_the_index_not_the_gpu():
    (gpu,) = parse_query_gpu_csv(LOAD_CSV.replace("\n0, GPU", "\nzero, GPU")).gpus
    assert gpu.index == 0 and "'zero'" in gpu.unsupported["index"]
    assert gpu.utilization == 100 and gpu.uuid.startswith("GPU-")


def test_it_rejects_a_non_numeric_pid():
    with pytest.raises(ParseError, match="line 2: pid"):
        parse_compute_apps_csv(APPS_LOAD.replace("448,", "x448,"))


def test_it_refuses_apps_output_as_gpu_output():
    with pytest.raises(ParseError, match="compute-apps"):
        parse_query_gpu_csv(APPS_LOAD)


def test_the_detectors_tell_the_real_files_apart():
    for path in sorted(H100.iterdir()):
        text = path.read_text()
        gpu_csv = path.name.startswith("smi_csv") and "extra" not in path.name
        assert looks_like_query_gpu_csv(text) is gpu_csv, path.name
        apps = path.name.startswith("smi_apps") and path.name != "smi_apps_nounits_idle.csv"
        assert looks_like_compute_apps_csv(text) is apps, path.name


# --- garbage --------------------------------------------------------------------------------


def _only_parse_errors(text: str) -> None:
    try:
        assert isinstance(parse_query_gpu_csv(text), schema.GpuReading)
    except ParseError as exc:
        assert exc.detail
    try:
        assert isinstance(parse_compute_apps_csv(text), list)
    except ParseError as exc:
        assert exc.detail
    assert isinstance(looks_like_query_gpu_csv(text), bool)
    assert isinstance(looks_like_compute_apps_csv(text), bool)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_it_raises_only_parse_error_on_arbitrary_text(text):
    _only_parse_errors(text)


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_it_raises_only_parse_error_on_random_bytes(data):
    _only_parse_errors(data.decode("latin-1"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([LOAD_CSV, LOAD_NOUNITS, APPS_LOAD]), st.integers(0, 400))
def test_it_raises_only_parse_error_on_truncated_files(text, cut):
    _only_parse_errors(text[:cut])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                ", ",
                ",",
                "[N/A]",
                "GPU-",
                "P0",
                "0x",
                " MiB",
                "index",
                "pid",
                "\n",
                "1",
                "-",
                "[",
                "]",
                " %",
                "x",
            ]
        ),
        max_size=40,
    )
)
def test_it_raises_only_parse_error_on_csv_shaped_noise(tokens):
    _only_parse_errors("".join(tokens))


# --- a header of known fields is enough (issue 10, kind 2) --------------------------------


def _columns(text: str, keep: list[str], *, units: bool = True) -> str:
    """The real H100 CSV cut to the ``keep`` columns (as a query for just those prints it),
    with or without the units nvidia-smi adds to the header."""
    rows = [line.split(", ") for line in text.strip().splitlines()]
    header = [canonical(name) for name in rows[0]]
    at = [header.index(canonical(name)) for name in keep]
    out = [[row[i] for i in at] for row in rows]
    if not units:
        out[0] = [canonical(name) for name in out[0]]
    return "\n".join(", ".join(row) for row in out) + "\n"


@pytest.mark.parametrize("units", [True, False], ids=["header-units", "header-plain"])
@pytest.mark.parametrize("source", ["smi_csv_load.csv", "smi_csv_nounits_load.csv"])
def test_any_header_of_known_fields_is_read_without_name_or_uuid(source, units):
    full = (H100 / source).read_text()
    if source == "smi_csv_nounits_load.csv":  # noheader,nounits: give it the query's header
        full = LOAD_CSV.splitlines()[0] + "\n" + full
    text = _columns(full, ["utilization.gpu", "power.draw", "temperature.gpu"], units=units)
    assert looks_like_query_gpu_csv(text)
    reading = read_capture_bytes(text.encode(), origin="spark.csv")
    (gpu,) = reading.gpus
    (whole,) = parse_query_gpu_csv(full).gpus  # the same row, every column
    assert (gpu.utilization, gpu.power_usage, gpu.temperature) == (
        whole.utilization, whole.power_usage, whole.temperature)  # fmt: skip
    assert gpu.utilization == 100 and gpu.power_usage > 690
    assert gpu.uuid is None and gpu.name is None and gpu.identity == "index:0"


def test_a_gpu_without_uuid_is_known_by_its_bus_id():
    text = _columns(LOAD_CSV, ["index", "pci.bus_id", "memory.used", "memory.total"])
    (gpu,) = parse_query_gpu_csv(text).gpus
    assert gpu.identity == "pci:00000000:00:06.0"
    assert (gpu.memory_used, gpu.memory_total) == (4735, 81559)


def test_a_gpu_without_memory_figures_shares_the_hosts_memory():
    (gpu,) = read_capture_bytes(
        (FIELD / "gb10-unified-memory-na.csv").read_bytes(), origin="gb10.csv"
    ).gpus
    assert gpu.unsupported["memory_used"] == schema.UNIFIED_MEMORY
    # on a discrete GPU a missing memory.used among known totals keeps its plain reason
    text = _columns(LOAD_CSV, ["memory.total", "memory.used"]).replace("4735 MiB", "[N/A]")
    (discrete,) = parse_query_gpu_csv(text).gpus
    assert discrete.unsupported["memory_used"] == schema.NOT_REPORTED


def test_the_same_process_listed_twice_by_compute_apps_is_one_row():
    # hand-built from the real capture: a process repeated, as a C+G process can be
    doubled = APPS_LOAD + APPS_LOAD.strip().splitlines()[1] + "\n"
    processes = parse_compute_apps_csv(doubled)
    assert len(processes) == len(parse_compute_apps_csv(APPS_LOAD))
    assert sum(p.used_memory_mib for p in processes) == sum(
        p.used_memory_mib for p in parse_compute_apps_csv(APPS_LOAD)
    )
