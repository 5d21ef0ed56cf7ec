"""Duration parsing and JSON rendering shared by the operator commands."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ops import output
from ops.replay import refreshed, replay_headers
from shared.errors import ValidationFailed
from tests.integration.ops_support import make_job


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604_800),
        ("1w", 604_800),
        ("1.5h", 5400),
        (" 3D ", 259_200),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert output.parse_duration(text, option="--since") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "2 fortnights", "-1d", "0h", "h", "1y"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        output.parse_duration(text, option="--older-than")
    assert str(caught.value).startswith("--older-than: ")


def test_json_lines_write_datetimes_as_utc_iso() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    line = output.json_line({"at": at, "n": 1, "none": None})
    assert json.loads(line) == {"at": "2026-01-02T03:04:05+00:00", "n": 1, "none": None}


def test_write_lines_ends_each_line() -> None:
    stream = io.StringIO()
    output.write_lines(["a", "b"], stream)
    assert stream.getvalue() == "a\nb\n"


def test_counts_are_sorted_by_name() -> None:
    assert output.format_counts({"rejected": 3, "expired": 1}) == "expired 1, rejected 3"
    assert output.format_counts({}) == "none"


def test_replay_of_an_expired_job_gets_its_original_validity_again() -> None:
    expired = replace(make_job(), accepted_at=0.0, expires_at=500.0)
    assert refreshed(expired, now_s=10_000.0, default_validity_s=1).expires_at == 10_500.0
    still_valid = replace(make_job(), accepted_at=0.0, expires_at=500.0)
    assert refreshed(still_valid, now_s=499.0, default_validity_s=1) is still_valid
    nonsense = replace(make_job(), accepted_at=600.0, expires_at=500.0)  # no validity to repeat
    assert refreshed(nonsense, now_s=1000.0, default_validity_s=300).expires_at == 1300.0


def test_replay_headers_start_the_attempts_again() -> None:
    headers = replay_headers(site="b", replay_number=3)
    assert headers == {
        "x-relay-attempt": 0,
        "x-relay-site-attempt": 0,
        "x-relay-site": "b",
        "x-relay-origin": "b",
        "x-relay-replay": 3,
    }


def test_plain_tables_align_columns_without_boxes() -> None:
    lines = output.plain_table(["id", "site"], [["abc", "a"], ["d", "bb"]])
    assert lines == ["id   site", "abc  a", "d    bb"]
    assert output.plain_table(["k", "v"], [["key", "value"]], header=False) == ["key  value"]


def test_a_table_into_a_pipe_is_plain_lines_with_its_foot(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stdout", stream)
    output.print_table(["tenant", "prefix"], [["demo", "rk_1"]], title="keys", foot="1 key")
    assert stream.getvalue() == "keys:\ntenant  prefix\ndemo    rk_1\n1 key\n"
