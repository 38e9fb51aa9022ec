from django.db import migrations

# Frozen SQL: migrations must not change when live helpers do.
NAME = "embedding_efficientnet_lite0_hnsw"
VECTOR_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {NAME} ON search_embedding USING hnsw "
    "((vector::vector(1280)) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
    "WHERE model = 'efficientnet_lite0'"
)
HALFVEC_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {NAME} ON search_embedding USING hnsw "
    "((vector::halfvec(1280)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 64) "
    "WHERE model = 'efficientnet_lite0'"
)


class Migration(migrations.Migration):
    """HNSW graphs hold halfvec copies: half the memory, same recall (benchmarks/search.py)."""

    dependencies = [("search", "0003_jobs")]

    operations = [
        migrations.RunSQL(
            [f"DROP INDEX IF EXISTS {NAME}", HALFVEC_INDEX],
            reverse_sql=[f"DROP INDEX IF EXISTS {NAME}", VECTOR_INDEX],
        )
    ]
