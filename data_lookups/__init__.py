"""Base registries: models, import, synthetic data, fact assembly and cache.

Knows neither the engine nor HTTP: the service asks for facts by the names a
policy declares (see :mod:`data_lookups.catalogue`).

Modules:

- :mod:`~data_lookups.catalogue` — the facts the registries provide, with types;
- :mod:`~data_lookups.id_numbers` — GB 11643-1999 ID numbers: validate, mask, build;
- :mod:`~data_lookups.models` — the tables (one ``Base``), including what miaopi issues;
- :mod:`~data_lookups.database` — ``make_engine``, ``ensure_schema``, ``write_transaction``;
- :mod:`~data_lookups.import_formats` / :mod:`~data_lookups.importer` — ``miaopi data import``;
- :mod:`~data_lookups.synthetic` — ``miaopi data generate``;
- :mod:`~data_lookups.facts` — ``FactSource``, ``SqlFactSource`` (facts + stamp, one snapshot);
- :mod:`~data_lookups.fact_cache` — the cache's freshness protocol, ``CachedFactSource``;
- :mod:`~data_lookups.cache_stores` — where entries are kept: in process, packed, Redis;
- :mod:`~data_lookups.issuance` — issuing inside the caller's transaction.

Schema changes: add a revision file to ``data_lookups/migrations/versions`` whose
``down_revision`` is the current head (one linear history for registry and service
tables); ``ensure_schema`` applies it on the next command. Tables of other packages
subclass :class:`data_lookups.models.Base` so that their metadata is the same.
"""
