"""Base registries: models, import, synthetic data, fact assembly and cache.

Knows neither the engine nor HTTP: the service asks for facts by the names a
policy declares (see :mod:`data_lookups.catalogue`).
"""
