"""The search app's REST endpoints, one module per concern: the catalog seen by search
(catalog), queries, duplicates, index jobs and models. Routes: search/urls.py and
search/catalog_urls.py."""
