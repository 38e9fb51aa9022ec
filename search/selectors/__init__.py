"""Reads for the search engine, one module per concern (import from the module itself):

- ``embedding_models``: the model specs (pretrained and trained here), the active model, coverage
- ``embeddings``: which items have a current vector; vector counts
- ``jobs``: index jobs, their failures and progress
- ``hnsw``: the pgvector extension, the HNSW indexes' state and size, and the ``hnsw.ef_search`` used
- ``neighbours``: the nearest-neighbour SQL (``items_similar_to``), its psycopg cursor and plan
- ``tuning``: the recorded queries, the tuning on record, and the exact (NumPy) ground truth
- ``duplicates``: duplicate pairs joined into groups, and the rules for the copy to keep
- ``caches``: the per-process caches of the reads above, and ``search_caches_forget``
"""
