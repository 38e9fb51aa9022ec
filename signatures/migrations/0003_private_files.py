"""Signatures leave the public media storage for the private one (README, "Users and
permissions"): the files of every reference and verification are moved, same names."""

from django.core.files.storage import default_storage
from django.db import migrations, models

import simsite.files


def _move(source, target, names):
    for name in names:
        if not name or not source.exists(name):
            continue
        if not target.exists(name):
            with source.open(name, "rb") as handle:
                saved = target.save(name, handle)
            if saved != name:  # never expected (content-addressed names): keep the original
                target.delete(saved)
                continue
        source.delete(name)


def _names(apps):
    Reference = apps.get_model("signatures", "Reference")
    Verification = apps.get_model("signatures", "Verification")
    return {*Reference.objects.values_list("file", flat=True), *Verification.objects.values_list("questioned", flat=True)}


def files_to_private(apps, schema_editor):
    _move(default_storage, simsite.files.private_storage(), _names(apps))


def files_to_public(apps, schema_editor):
    _move(simsite.files.private_storage(), default_storage, _names(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("signatures", "0002_signature_encoder"),
    ]

    operations = [
        migrations.AlterField(
            model_name="reference",
            name="file",
            field=models.FileField(max_length=255, storage=simsite.files.private_storage, upload_to=""),
        ),
        migrations.AlterField(
            model_name="verification",
            name="questioned",
            field=models.FileField(max_length=255, storage=simsite.files.private_storage, upload_to=""),
        ),
        migrations.RunPython(files_to_private, files_to_public, elidable=True),
    ]
