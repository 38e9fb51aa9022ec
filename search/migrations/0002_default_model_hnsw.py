from django.db import migrations

# Frozen SQL: migrations must not change when live helpers do.
CREATE = (
    "CREATE INDEX IF NOT EXISTS embedding_efficientnet_lite0_hnsw ON search_embedding USING hnsw "
    "((vector::vector(1280)) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
    "WHERE model = 'efficientnet_lite0'"
)


class Migration(migrations.Migration):
    dependencies = [("search", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE, reverse_sql="DROP INDEX IF EXISTS embedding_efficientnet_lite0_hnsw"),
    ]
