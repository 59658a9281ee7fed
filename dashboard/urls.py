"""Dashboard URLs: the JSON/CSV API (pages are added next to it)."""

from django.urls import path

from dashboard import api

app_name = "dashboard"

urlpatterns = [
    path("api/history", api.history, name="history"),
]
