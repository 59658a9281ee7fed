"""Metric names carry their unit where two could be confused (issue 9): GPU ``memory_used``
(MiB) was next to host ``memory_usage`` (%).

Renames the sample and roll-up columns (a rename: the values stay, no table is rewritten) and
the metric names stored as text in thresholds and alerts. The names are written out here (not
imported from ``monitoring.metrics.RENAMED``, a test checks they agree) because a migration
must replay the same way forever. Reversible: backwards, every column and stored name gets its
old name back.
"""

from django.db import migrations, models

# old name -> new name
RENAMED = {
    "memory_used": "memory_used_mib",
    "power_usage": "power_w",
    "cpu_usage": "cpu_percent",
    "memory_usage": "ram_percent",
    "swap_usage": "swap_percent",
}
GPU_RENAMED = ("memory_used", "power_usage")
HOST_RENAMED = ("cpu_usage", "memory_usage", "swap_usage")
AGGREGATES = ("min", "avg", "max")


def _rename_columns(sample: str, rollup: str, old_names: tuple[str, ...]) -> list:
    operations = []
    for old in old_names:
        new = RENAMED[old]
        operations.append(migrations.RenameField(sample, old, new))
        operations += [
            migrations.RenameField(rollup, f"{old}_{agg}", f"{new}_{agg}") for agg in AGGREGATES
        ]
    return operations


def _rename_stored_names(apps, schema_editor, mapping: dict[str, str]) -> None:
    db = schema_editor.connection.alias
    for model in ("Threshold", "Alert"):
        rows = apps.get_model("monitoring", model).objects.using(db)
        for old, new in mapping.items():
            rows.filter(metric=old).update(metric=new)


def forwards(apps, schema_editor):
    _rename_stored_names(apps, schema_editor, RENAMED)


def backwards(apps, schema_editor):
    _rename_stored_names(apps, schema_editor, {new: old for old, new in RENAMED.items()})


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0006_gpu_key_without_uuid"),
    ]

    operations = [
        *_rename_columns("gpusample", "gpurollup", GPU_RENAMED),
        *_rename_columns("hostsample", "hostrollup", HOST_RENAMED),
        migrations.AlterField(
            model_name="threshold",
            name="metric",
            field=models.CharField(
                choices=[
                    ("utilization", "GPU: GPU utilization (%)"),
                    ("memory_utilization", "GPU: Memory controller (%)"),
                    ("memory_used_mib", "GPU: Memory used (MiB)"),
                    ("temperature", "GPU: Temperature (°C)"),
                    ("power_w", "GPU: Power (W)"),
                    ("fan_speed", "GPU: Fan (%)"),
                    ("sm_clock", "GPU: SM clock (MHz)"),
                    ("memory_clock", "GPU: Memory clock (MHz)"),
                    ("encoder_utilization", "GPU: Encoder (%)"),
                    ("decoder_utilization", "GPU: Decoder (%)"),
                    ("pcie_tx", "GPU: PCIe TX (B/s)"),
                    ("pcie_rx", "GPU: PCIe RX (B/s)"),
                    ("memory_percent", "GPU: Memory used (%)"),
                    ("cpu_percent", "Host: CPU (%)"),
                    ("ram_percent", "Host: Memory (%)"),
                    ("swap_percent", "Host: Swap (%)"),
                    ("load_1", "Host: Load (1 min)"),
                    ("load_5", "Host: Load (5 min)"),
                    ("load_15", "Host: Load (15 min)"),
                    ("disk_read", "Host: Disk read (B/s)"),
                    ("disk_write", "Host: Disk write (B/s)"),
                    ("net_recv", "Host: Network in (B/s)"),
                    ("net_sent", "Host: Network out (B/s)"),
                    ("load_per_core", "Host: load average per core"),
                    ("gpu_lost", "GPU lost"),
                ],
                max_length=32,
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
