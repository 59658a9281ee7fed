"""Dashboard URLs: the live page per host, its polling fallback, history, the API, the
operator endpoints and Prometheus."""

from django.urls import path

from dashboard import api, operations, prometheus, views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard, name="index"),
    path("hosts/<str:host>/", views.dashboard, name="host"),
    path("live/fragments", views.live_fragments, name="fragments"),
    path("history/", views.history, name="history-page"),
    path("api/history", api.history, name="history"),
    path("api/health", operations.health, name="health"),
    path("api/config", operations.config, name="config"),
    path("api/snapshot", operations.snapshot, name="snapshot"),
    path("metrics", prometheus.metrics, name="metrics"),
]
