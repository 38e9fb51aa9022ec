"""A signature encoder is trained on one or several sources (``--data LAYOUT:DIR``, repeatable):
the single ``data``/``layout`` pair becomes a list, each existing run keeping its one source."""

from django.db import migrations, models


def sources_from_folder(apps, schema_editor):
    SignatureEncoder = apps.get_model("signatures", "SignatureEncoder")
    for encoder in SignatureEncoder.objects.all():
        encoder.sources = [{"layout": encoder.layout, "data": encoder.data}]
        encoder.save(update_fields=["sources"])


def folder_from_sources(apps, schema_editor):
    SignatureEncoder = apps.get_model("signatures", "SignatureEncoder")
    for encoder in SignatureEncoder.objects.all():
        first = (encoder.sources or [{"layout": "folders", "data": ""}])[0]
        encoder.layout, encoder.data = first["layout"], first["data"]
        encoder.save(update_fields=["layout", "data"])


class Migration(migrations.Migration):
    dependencies = [("signatures", "0003_private_files")]

    operations = [
        migrations.AddField(
            model_name="signatureencoder",
            name="sources",
            field=models.JSONField(default=list, help_text='The training data: [{"layout": ..., "data": folder}, ...]'),
        ),
        migrations.RunPython(sources_from_folder, folder_from_sources),
        # Defaults first, so that undoing the removals can add the columns back to existing rows.
        migrations.AlterField(
            model_name="signatureencoder",
            name="data",
            field=models.CharField(default="", help_text="The training data folder", max_length=1024),
        ),
        migrations.AlterField(
            model_name="signatureencoder", name="layout", field=models.CharField(default="", max_length=16)
        ),
        migrations.RemoveField(model_name="signatureencoder", name="data"),
        migrations.RemoveField(model_name="signatureencoder", name="layout"),
    ]
