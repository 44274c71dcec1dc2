"""ID numbers: GB 11643-1999 validation, birth date, masking, construction."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from approval_service.errors import InvalidIdNumber, RequestError
from data_lookups.id_numbers import (
    _check_char_by_weights,
    birth_date_of,
    check_char,
    is_valid_id_number,
    make_id_number,
    mask_id,
    validate_id_number,
)

# 11010519491231002X is the standard's own example
VALID = ["11010519491231002X", "11010519491231002x", "341602195801011234"]


@pytest.mark.parametrize("id_number", VALID)
def test_valid_numbers_normalise_to_upper_case(id_number: str) -> None:
    assert validate_id_number(id_number) == id_number.upper()
    assert is_valid_id_number(id_number)


@pytest.mark.parametrize(
    ("id_number", "fragment"),
    [
        ("11010519491231002", "18 characters"),
        ("11010519491231002XX", "18 characters"),
        ("1101051949123100AX", "first 17 characters must be digits"),
        ("110105194912310021", "check character"),
        ("11010519490230002X", "not a real birth date"),
        ("11010520991231002X", "in the future"),
        ("11010519491231002Y", "last character"),
        ("", "18 characters"),
    ],
)
def test_invalid_numbers_say_why(id_number: str, fragment: str) -> None:
    with pytest.raises(InvalidIdNumber, match=fragment) as info:
        validate_id_number(id_number)
    assert isinstance(info.value, RequestError)
    assert info.value.field == "id_number"
    assert not is_valid_id_number(id_number)


def test_message_does_not_repeat_the_number() -> None:
    with pytest.raises(InvalidIdNumber) as info:
        validate_id_number("110105194912310021")
    assert "110105194912310021" not in str(info.value)


def test_birth_date_and_masking() -> None:
    assert birth_date_of("11010519491231002x") == date(1949, 12, 31)
    assert mask_id("341602195801011234") == "341602********1234"
    assert mask_id("short") == "*****"


def test_make_id_number_sets_check_char_and_rejects_bad_input() -> None:
    assert make_id_number("110105", date(1949, 12, 31), 2) == "11010519491231002X"
    with pytest.raises(ValueError):
        make_id_number("1101", date(1949, 12, 31), 2)
    with pytest.raises(ValueError):
        make_id_number("110105", date(1949, 12, 31), 1000)


def test_future_relative_to_given_today() -> None:
    number = make_id_number("341602", date(2026, 11, 24), 1)
    assert not is_valid_id_number(number, today=date(2026, 11, 23))
    assert is_valid_id_number(number, today=date(2026, 11, 24))


regions = st.from_regex(r"[1-6][0-9]{5}", fullmatch=True)
births = st.dates(min_value=date(1900, 1, 1), max_value=date.today() - timedelta(days=1))
seqs = st.integers(min_value=0, max_value=999)


@given(regions, births, seqs)
def test_generated_numbers_validate(region: str, born: date, seq: int) -> None:
    number = make_id_number(region, born, seq)
    assert validate_id_number(number) == number
    assert birth_date_of(number) == born


@given(regions, births, seqs, st.integers(min_value=0, max_value=17), st.data())
def test_any_single_character_change_invalidates(
    region: str, born: date, seq: int, position: int, data: st.DataObject
) -> None:
    number = make_id_number(region, born, seq)
    alphabet = "0123456789X" if position == 17 else "0123456789"
    replacement = data.draw(st.sampled_from([c for c in alphabet if c != number[position]]))
    changed = number[:position] + replacement + number[position + 1 :]
    assert not is_valid_id_number(changed)


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_fast_check_char_equals_weighted_sum(first17: str) -> None:
    assert check_char(first17) == _check_char_by_weights(first17)
