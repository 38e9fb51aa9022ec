"""Writes for the search engine, one module per concern (import from the module itself):

- ``locks``: advisory locks and the row lock of a trained model, which order concurrent writes
- ``activation``: a model's HNSW index built, and searches switched to a model
- ``indexing``: index jobs and batches, ``items_index``, the embedding of a batch, ``embedding_upsert``
- ``reconciler``: the periodic sweep that makes lost messages, dead workers and stuck jobs harmless
- ``trained_models``: training runs of models trained here, and their deletion
- ``duplicates``: the duplicates review (dismiss, keep) and the background duplicates scans
- ``tuning``: recorded search queries and the ``hnsw.ef_search`` tuning measured on them
"""
