"""The four groups clients and checks rely on (accounts.roles).

Django makes permissions after migrating (post_migrate); they are made here first so that
the groups can be given them on a new database."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from accounts.roles import ROLES, roles_create


def groups_create(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_create(group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"))


def groups_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("catalog", "0003_import_cancelled"),
        ("search", "0011_search_tuning"),
        ("signatures", "0003_private_files"),
    ]

    operations = [migrations.RunPython(groups_create, groups_delete)]
