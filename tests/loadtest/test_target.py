"""Load tests never leave the machine: only loopback URLs are accepted."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.loadtest.target import Target, UnsafeTarget, loopback_target


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8000", Target("127.0.0.1", 8000, "127.0.0.1:8000", "")),
        ("http://127.0.0.1:8000/", Target("127.0.0.1", 8000, "127.0.0.1:8000", "")),
        ("http://127.8.9.10:81/api", Target("127.8.9.10", 81, "127.8.9.10:81", "/api")),
        ("http://localhost:8000", Target("127.0.0.1", 8000, "127.0.0.1:8000", "")),
        ("http://LOCALHOST", Target("127.0.0.1", 80, "127.0.0.1:80", "")),
        ("http://[::1]:8000", Target("::1", 8000, "[::1]:8000", "")),
    ],
)
def test_loopback_urls_are_accepted(url: str, target: Target) -> None:
    assert loopback_target(url) == target


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://192.168.1.5",
        "http://0.0.0.0:8000",
        "http://8.8.8.8",
        "http://example.com",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://[::2]:8000",
        "http://[::ffff:10.0.0.1]",
        "https://127.0.0.1:8000",
        "ftp://127.0.0.1",
        "127.0.0.1:8000",
        "http://user:pw@127.0.0.1",
        "http://",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        loopback_target(url)


def test_the_command_refuses_with_exit_2_before_sending_anything() -> None:
    result = CliRunner().invoke(
        app,
        ["loadtest", "--url", "http://10.1.2.3:8000", "--rate", "10", "--duration", "1"],
    )
    assert result.exit_code == 2
    assert "not a loopback address" in result.output
