"""docs/metrics.md lists every metric pandamq defines; the shipped Grafana
dashboard and alert rules use only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from broker import metrics
from broker.observability.gauges import described

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\b(pandamq_[a-z_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def defined() -> set[str]:
    """Every metric name of broker/metrics.py and of the SQL gauges."""
    names = {f.name for f in described()}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def base(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in defined():
            return name.removesuffix(suffix)
    return name


def test_metrics_doc_lists_every_metric() -> None:
    table = set(NAME.findall((DOCS / "metrics.md").read_text()))
    assert defined() <= table
    assert {base(n) for n in table} <= defined()


def test_dashboard_and_alerts_use_defined_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana" / "pandamq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DOCS / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {base(n) for e in exprs for n in NAME.findall(e)}
    assert used and used <= defined()
