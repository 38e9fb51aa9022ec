from django.db import migrations

from search.models import DEFAULT_MODEL_DIM, DEFAULT_MODEL_KEY, hnsw_index_name, hnsw_index_sql


class Migration(migrations.Migration):
    dependencies = [("search", "0001_initial")]

    operations = [
        migrations.RunSQL(
            hnsw_index_sql(DEFAULT_MODEL_KEY, DEFAULT_MODEL_DIM),
            reverse_sql=f"DROP INDEX IF EXISTS {hnsw_index_name(DEFAULT_MODEL_KEY)}",
        )
    ]
