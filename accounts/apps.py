from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _roles_ensure(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` or ``flush`` (every table exists by then): a role whose group is
    missing is made again, with every app's permissions made first (Django makes them app by
    app in the same signal, some after this one)."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    from accounts.roles import roles_create

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    roles_create(group_model=Group, permission_model=Permission)


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Users and audit"

    def ready(self) -> None:
        from accounts import receivers  # noqa: F401 - connects the lockout receiver

        post_migrate.connect(_roles_ensure, sender=self, dispatch_uid="accounts.roles_ensure")
