"""deploy/grafana/hoofhearted.json works on our /metrics: every series it asks for is one the
exposition defines (scraped from a real worker's snapshot), and it is a well-formed dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = json.loads(
    (Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "hoofhearted.json").read_text()
)
SUFFIXES = {"counter": ("_total",), "info": ("_info",), "gauge": ("",)}


def exposed_names(client) -> set[str]:
    """Every series name /metrics can give, from its families (even those without samples)."""
    text = client.get("/metrics").content.decode()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def queries() -> list[str]:
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", ())]
    return exprs + [v["definition"] for v in DASHBOARD["templating"]["list"] if "definition" in v]


def test_every_series_the_dashboard_asks_for_is_exposed(client, h100_host):
    exposed = exposed_names(client)
    asked = {name for expr in queries() for name in re.findall(r"hoofhearted_[a-z0-9_]+", expr)}
    assert len(asked) > 30
    assert asked - exposed == set()


def test_it_is_a_well_formed_dashboard_on_a_chosen_prometheus():
    panels = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert DASHBOARD["uid"] == "hoofhearted"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    # every GPU panel follows the host and GPU pickers
    gpu_exprs = [e for e in queries() if "hoofhearted_gpu_" in e and "label_values" not in e]
    assert all('host=~"$host", gpu=~"$gpu"' in e for e in gpu_exprs)
