from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from monitoring.models import Host

        post_delete.connect(_host_deleted, sender=Host, dispatch_uid="dashboard-host-deleted")


def _host_deleted(sender, instance, **kwargs) -> None:
    """A host deleted (in admin): this process's live pages forget it at once; other server
    processes do when a page next reads the host list (:func:`dashboard.views._known_hosts`)."""
    from dashboard.hub import get_hub

    get_hub().forget(instance.name)
