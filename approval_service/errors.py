"""Every error miaopi raises on purpose, in one tree.

::

    MiaopiError
    ├── PolicyError                  a policy file or folder cannot be loaded
    │   ├── PolicySyntaxError        YAML or expression syntax (file, line, column)
    │   ├── PolicyTypeError          an expression does not type-check
    │   └── PolicyDefinitionError    a missing/unknown key, a bad parameter table …
    ├── EvaluationError              a policy cannot decide on the facts given
    │   └── ParameterMissingError    no parameter value in force on the date
    ├── FactsError                   facts handed to the engine do not fit the policy
    ├── CaseFileError                an author's test-case file is malformed
    ├── RequestError                 a request from a caller is invalid
    │   ├── InvalidIdNumber          GB 11643 check failed
    │   └── UnknownItem              no policy with that item id
    ├── RegistryError                base-registry data access failed
    │   ├── RegistryUnavailable      the database cannot be reached (retry later)
    │   ├── ImportValidationError    an import file has invalid lines (nothing applied)
    │   └── IssuanceConflict         issuing would break a registry constraint
    └── CacheUnavailable             the fact cache (Redis) cannot be reached

Only the API layer turns these into HTTP responses; the CLI turns them into
messages and exit codes. Third-party exceptions (YAML, SQLAlchemy, Redis) are
translated where they are caught, with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass


class MiaopiError(Exception):
    """Root of every error miaopi raises on purpose."""


@dataclass(frozen=True)
class Location:
    """Where in a source file something is: 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        out = self.file
        if self.line is not None:
            out += f":{self.line}"
            if self.column is not None:
                out += f":{self.column}"
        return out


class PolicyError(MiaopiError):
    """A policy cannot be loaded. Carries where, what, and a suggestion."""

    def __init__(
        self, message: str, location: Location | None = None, suggestion: str | None = None
    ) -> None:
        self.message = message
        self.location = location
        self.suggestion = suggestion
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.suggestion:
            text += f" ({self.suggestion})"
        return text


class PolicySyntaxError(PolicyError):
    """YAML or expression syntax is wrong."""


class PolicyTypeError(PolicyError):
    """An expression does not type-check against the declared facts."""


class PolicyDefinitionError(PolicyError):
    """A policy file's structure is wrong: missing, unknown or duplicate keys, bad tables."""


class PolicyFolderError(PolicyError):
    """Several policy files failed; ``errors`` holds each one."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))


class EvaluationError(MiaopiError):
    """A policy cannot decide on the facts given."""


class ParameterMissingError(EvaluationError):
    """No value of a parameter is in force on the business date."""


class FactsError(MiaopiError):
    """Facts handed to the engine do not fit what the policy declares."""


class CaseFileError(MiaopiError):
    """An author's test-case file is malformed."""


class RequestError(MiaopiError):
    """A caller's request is invalid; ``field`` names what to fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class InvalidIdNumber(RequestError):
    """An ID number fails GB 11643-1999 (length, check character, birth date)."""


class UnknownItem(RequestError):
    """No policy is loaded for the item id."""


class RegistryError(MiaopiError):
    """Base-registry data access failed."""


class RegistryUnavailable(RegistryError):
    """The registry database cannot be reached; the caller may retry."""


class ImportValidationError(RegistryError):
    """An import file has invalid lines; nothing from that file was applied."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class IssuanceConflict(RegistryError):
    """Issuing would break a registry constraint (already issued, already active)."""


class CacheUnavailable(MiaopiError):
    """The fact cache cannot be reached; callers fall back to the database."""
