from django.contrib.admin.apps import AdminConfig


class BulwarkAdminConfig(AdminConfig):
    """Django's admin with Bulwark's site (the dashboard in front of the ``resilience`` app index)."""

    default_site = "resilience.dashboard.sites.BulwarkAdminSite"
