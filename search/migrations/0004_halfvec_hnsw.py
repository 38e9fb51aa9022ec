from django.db import migrations

from search.models import DEFAULT_MODEL_DIM, DEFAULT_MODEL_KEY, hnsw_index_name, hnsw_index_sql

NAME = hnsw_index_name(DEFAULT_MODEL_KEY)
VECTOR_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {NAME} ON search_embedding USING hnsw "
    f"((vector::vector({DEFAULT_MODEL_DIM})) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
    f"WHERE model = '{DEFAULT_MODEL_KEY}'"
)


class Migration(migrations.Migration):
    """HNSW graphs hold halfvec copies: half the memory, same recall (benchmarks/search.py)."""

    dependencies = [("search", "0003_jobs")]

    operations = [
        migrations.RunSQL(
            [f"DROP INDEX IF EXISTS {NAME}", hnsw_index_sql(DEFAULT_MODEL_KEY, DEFAULT_MODEL_DIM)],
            reverse_sql=[f"DROP INDEX IF EXISTS {NAME}", VECTOR_INDEX],
        )
    ]
