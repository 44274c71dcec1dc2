"""The ``miaopi`` command line: :mod:`.main` builds the app from one module per sub-app.

Each command builds :class:`approval_service.settings.Settings` when it starts,
never at import, and lets :class:`approval_service.errors.MiaopiError` propagate:
:class:`approval_service.cli.main.MiaopiGroup` prints it without a traceback and
exits 1 (bad input) or 2 (a service it needs is down).
"""
