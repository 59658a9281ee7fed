"""Dashboard URLs: the live page per host, its polling fallback, history, and the API."""

from django.urls import path

from dashboard import api, views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard, name="index"),
    path("hosts/<str:host>/", views.dashboard, name="host"),
    path("live/fragments", views.live_fragments, name="fragments"),
    path("history/", views.history, name="history-page"),
    path("api/history", api.history, name="history"),
]
