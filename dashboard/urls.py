"""Dashboard URLs: the JSON/CSV API, the operator endpoints and Prometheus (pages next to them)."""

from django.urls import path

from dashboard import api, operations, prometheus

app_name = "dashboard"

urlpatterns = [
    path("api/history", api.history, name="history"),
    path("api/health", operations.health, name="health"),
    path("api/config", operations.config, name="config"),
    path("api/snapshot", operations.snapshot, name="snapshot"),
    path("metrics", prometheus.metrics, name="metrics"),
]
