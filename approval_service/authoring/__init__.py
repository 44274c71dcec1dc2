"""Tools for policy authors: test-case files, lint, readable summaries.

- :mod:`.cases` reads ``rules/cases/<item>.yaml`` into :class:`~.cases.Case` objects;
- :mod:`.run` runs them on the engine backends and compares field by field;
- :mod:`.lint` checks a rules folder beyond what the loader checks;
- :mod:`.show` prints a policy as a Chinese summary.

The engine stays pure: cross-checks against the registry catalogue and the
authors' expectations live here, not in :mod:`approval_service.engine`.
"""
