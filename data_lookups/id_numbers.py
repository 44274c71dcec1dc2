"""Resident ID numbers (GB 11643-1999): validation, birth date, masking, construction.

An ID number is 18 characters: a 6-digit address code, the birth date as
``YYYYMMDD``, a 3-digit sequence (odd for men, even for women) and an
ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X`` for 10). ``x`` is
accepted on input; the normalised form is upper case.

The address code is deliberately not checked against the birth date (districts
are renamed; see the handbook). ID numbers are personal data: log them only
through :func:`mask_id`.
"""

from __future__ import annotations

from datetime import date

from approval_service.errors import InvalidIdNumber

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_DIGITS = frozenset("0123456789")


def check_char(first17: str) -> str:
    """The MOD 11-2 check character for the first 17 digits.

    The weights are 2**(17-i) mod 11, and 13 = 2 (mod 11), so the weighted sum is
    congruent to 2 * int(first17, 13): the C parser does the arithmetic.
    """
    return _CHECK_CHARS[(2 * int(first17, 13)) % 11]


def _check_char_by_weights(first17: str) -> str:
    """The textbook computation, kept to test :func:`check_char` against."""
    total = sum(w * (ord(ch) - 48) for w, ch in zip(_WEIGHTS, first17, strict=True))
    return _CHECK_CHARS[total % 11]


def _problem(id_number: str, *, today: date | None) -> str | None:
    """Why ``id_number`` (already upper-cased) is invalid, or None when it is valid."""
    if len(id_number) != 18:
        return f"must be 18 characters, got {len(id_number)}"
    head = id_number[:17]
    if not _DIGITS.issuperset(head):
        return "the first 17 characters must be digits"
    last = id_number[17]
    if last not in _DIGITS and last != "X":
        return "the last character must be a digit or X"
    try:
        born = date(int(head[6:10]), int(head[10:12]), int(head[12:14]))
    except ValueError:
        return f"characters 7-14 ({head[6:14]}) are not a real birth date"
    if born > (today or date.today()):
        return f"birth date {born.isoformat()} is in the future"
    if born.year < 1850:
        return f"birth date {born.isoformat()} is not plausible"
    if check_char(head) != last:
        return "check character does not match (mistyped digit?)"
    return None


def validate_id_number(id_number: str, *, today: date | None = None) -> str:
    """The normalised (upper-case) ID number; raises :class:`InvalidIdNumber`.

    The message names what is wrong without repeating the number.
    """
    if not isinstance(id_number, str):
        raise InvalidIdNumber("ID number must be a string of 18 characters", field="id_number")
    normalised = id_number.strip().upper()
    problem = _problem(normalised, today=today)
    if problem is not None:
        raise InvalidIdNumber(f"invalid ID number: {problem}", field="id_number")
    return normalised


def id_number_problem(id_number: str, *, today: date | None = None) -> str | None:
    """Like :func:`validate_id_number` but returns the problem text (or None) instead of raising.

    Does not strip whitespace: import files must hold the exact value.
    """
    return _problem(id_number.upper(), today=today)


def is_valid_id_number(id_number: str, *, today: date | None = None) -> bool:
    """True when ``id_number`` is a valid GB 11643-1999 number (``x`` accepted)."""
    return isinstance(id_number, str) and _problem(id_number.upper(), today=today) is None


def birth_date_of(id_number: str) -> date:
    """The birth date encoded in a valid ID number (not the registry's, which may differ)."""
    normalised = validate_id_number(id_number)
    return date(int(normalised[6:10]), int(normalised[10:12]), int(normalised[12:14]))


def mask_id(id_number: str) -> str:
    """``341602195801011234`` → ``341602********1234``: safe for logs and messages."""
    if len(id_number) != 18:
        return "*" * len(id_number)
    return id_number[:6] + "********" + id_number[14:]


def make_id_number(region: str, birth_date: date, seq: int) -> str:
    """Build a valid ID number: 6-digit region, birth date, sequence 0-999, check char.

    An odd ``seq`` denotes a man, an even one a woman.
    """
    if len(region) != 6 or not region.isdigit():
        raise ValueError("region must be 6 digits")
    if not 0 <= seq <= 999:
        raise ValueError("seq must be in 0..999")
    head = f"{region}{birth_date:%Y%m%d}{seq:03d}"
    return head + check_char(head)
