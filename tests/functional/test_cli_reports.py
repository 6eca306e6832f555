"""The CLI reports over a real server's store: ``certs list`` filters and exports, ``certs expiring``,
``events list``, and one-line refusals of bad input."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import update

from scep_server.cli import main
from scep_server.service.reports import CERTIFICATE_COLUMNS, EVENT_COLUMNS
from scep_server.store import serial_hex
from scep_server.store.tables import certificates, scep_events

from .conftest import Device, ScepTestServer

Run = tuple[int, str, str]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(*argv)`` runs ``scep-server --config <the server's config> *argv``: (status, stdout, stderr)."""

    def run(*argv: str) -> Run:
        capsys.readouterr()
        status = main(["--config", str(tmp_path / "scep-server.yaml"), *argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _enroll(server: ScepTestServer, name: str, **times: datetime | None) -> x509.Certificate:
    """Enroll a device named ``name``; ``times`` overwrite the stored issued_at / not_after."""
    certificate = server.enroll(Device(common_name=name))
    values = {column: value for column, value in times.items() if value is not None}
    if values:
        with server.runtime.store.engine.begin() as conn:
            conn.execute(
                update(certificates)
                .where(certificates.c.serial_hex == serial_hex(certificate.serial_number))
                .values(**values)
            )
    return certificate


def _revoke(server: ScepTestServer, certificate: x509.Certificate) -> None:
    store = server.runtime.store
    record = store.get_certificate(certificate.serial_number)
    assert record is not None
    store.revoke(certificate.serial_number, record.issuer, reason=1, revoked_at=datetime.now(UTC))


def _json_serials(run: Run) -> list[str]:
    status, out, _ = run
    assert status == 0
    return [row["serial"] for row in json.loads(out)]


def _hex(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:x}"


def _one_line_error(run: Run) -> str:
    status, out, err = run
    assert status == 2 and out == ""
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("scep-server: ")]
    return line


def test_the_table_stays_as_it_was(server: ScepTestServer, cli: Any) -> None:
    certificate = _enroll(server, "table-device")
    status, out, _ = cli("certs", "list")
    header, row = out.splitlines()
    assert status == 0
    assert header == f"{'SERIAL':<42} {'STATUS':<8} {'NOT AFTER':<20} {'PROFILE':<12} SUBJECT"
    assert row.split() == [
        _hex(certificate), "valid", *f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}".split(), "default",
        "CN=table-device",
    ]


def test_since_and_until_take_durations_and_zoned_times(server: ScepTestServer, cli: Any) -> None:
    now = datetime.now(UTC)
    old = _enroll(server, "old", issued_at=now - timedelta(days=10))
    recent = _enroll(server, "recent", issued_at=now - timedelta(days=2))
    fresh = _enroll(server, "fresh", issued_at=now - timedelta(minutes=10))
    assert _json_serials(cli("certs", "list", "--since", "7d", "--json")) == [_hex(fresh), _hex(recent)]
    assert _json_serials(cli("certs", "list", "--since", "30m", "--json")) == [_hex(fresh)]
    assert _json_serials(cli("certs", "list", "--until", "24h", "--json")) == [_hex(recent), _hex(old)]
    five_days_ago = (now - timedelta(days=5)).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert _json_serials(cli("certs", "list", "--since", five_days_ago, "--json")) == [_hex(fresh), _hex(recent)]
    zulu = f"{now - timedelta(days=5):%Y-%m-%dT%H:%M:%S}Z"
    assert _json_serials(cli("certs", "list", "--until", zulu, "--json")) == [_hex(old)]
    assert _json_serials(cli("certs", "list", "--since", "7d", "--until", "1d", "--json")) == [_hex(recent)]


def test_subject_is_a_case_insensitive_literal_substring(server: ScepTestServer, cli: Any) -> None:
    alice, bob = _enroll(server, "Laptop-Alice"), _enroll(server, "laptop-bob")
    underscore, _ = _enroll(server, "phone_1"), _enroll(server, "phoneX1")
    assert _json_serials(cli("certs", "list", "--subject", "LAPTOP", "--json")) == [_hex(bob), _hex(alice)]
    assert _json_serials(cli("certs", "list", "--subject", "phone_", "--json")) == [_hex(underscore)]
    assert _json_serials(cli("certs", "list", "--subject", "%", "--json")) == []
    status, out, _ = cli("certs", "list", "--subject", "alice")
    assert status == 0 and len(out.splitlines()) == 2 and "CN=Laptop-Alice" in out


def test_status_valid_revoked_and_expired(server: ScepTestServer, cli: Any) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    valid = _enroll(server, "valid")
    revoked = _enroll(server, "revoked")
    expired = _enroll(server, "expired", not_after=yesterday)
    revoked_and_expired = _enroll(server, "revoked-and-expired", not_after=yesterday)
    _revoke(server, revoked)
    _revoke(server, revoked_and_expired)
    assert _json_serials(cli("certs", "list", "--status", "valid", "--json")) == [_hex(valid)]
    assert _json_serials(cli("certs", "list", "--status", "revoked", "--json")) == [
        _hex(revoked_and_expired), _hex(revoked),
    ]
    assert _json_serials(cli("certs", "list", "--status", "expired", "--json")) == [
        _hex(revoked_and_expired), _hex(expired),
    ]
    assert _json_serials(cli("certs", "list", "--status", "valid", "--profile", "strict", "--json")) == []


def test_json_describes_each_certificate(server: ScepTestServer, cli: Any) -> None:
    certificate = _enroll(server, "json-device")
    _revoke(server, certificate)
    status, out, _ = cli("certs", "list", "--json")
    [row] = json.loads(out)
    assert status == 0 and set(row) == set(CERTIFICATE_COLUMNS)
    assert row["serial"] == _hex(certificate)
    assert row["subject"] == "CN=json-device"
    assert row["issuer"] == certificate.issuer.rfc4514_string()
    assert row["sans"] == [] and row["profile"] == "default"
    assert (row["status"], row["expired"], row["revocation_reason"]) == ("revoked", False, "keyCompromise")
    assert datetime.fromisoformat(row["revoked_at"]) <= datetime.now(UTC)
    assert datetime.fromisoformat(row["not_after"]) == certificate.not_valid_after_utc
    assert datetime.fromisoformat(row["not_before"]) == certificate.not_valid_before_utc
    assert row["sha256_thumbprint"].lower() == certificate.fingerprint(hashes.SHA256()).hex()
    assert row["sha1_thumbprint"].lower() == certificate.fingerprint(hashes.SHA1()).hex()


def test_csv_quotes_fields_and_defuses_formulas(server: ScepTestServer, cli: Any) -> None:
    quoted = server.enroll(Device(common_name='Smith, "J"'), transaction_id="=SUM(1+2)")
    status, out, _ = cli("certs", "list", "--csv")
    assert status == 0 and out.endswith("\r\n")
    header, row = list(csv.reader(io.StringIO(out, newline="")))
    assert header == list(CERTIFICATE_COLUMNS)
    cells = dict(zip(header, row, strict=True))
    assert cells["subject"] == quoted.subject.rfc4514_string() == 'CN=Smith\\, \\"J\\"'
    assert cells["transaction_id"] == "'=SUM(1+2)"  # a spreadsheet shows it, never computes it
    assert '"CN=Smith\\, \\""J\\"""' in out  # RFC 4180: quoted, inner quotes doubled
    assert (cells["serial"], cells["sans"], cells["revoked_at"], cells["expired"]) == (_hex(quoted), "", "", "false")


@pytest.mark.parametrize("detail", ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)"])
def test_event_csv_defuses_every_formula_start(server: ScepTestServer, cli: Any, detail: str) -> None:
    server.runtime.store.record_operation(
        profile="default", operation="PKIOperation", message_type=19, transaction_id="tx-formula",
        outcome="FAILURE:BAD_REQUEST", detail=detail, requester_ip="192.0.2.7",
    )
    status, out, _ = cli("events", "list", "--csv")
    header, row = list(csv.reader(io.StringIO(out, newline="")))
    assert status == 0 and header == list(EVENT_COLUMNS)
    assert dict(zip(header, row, strict=True))["detail"] == "'" + detail


def test_expiring_lists_valid_certificates_in_the_window_soonest_first(server: ScepTestServer, cli: Any) -> None:
    now = datetime.now(UTC)
    in_20_days = _enroll(server, "in-20-days", not_after=now + timedelta(days=20))
    in_10_days = _enroll(server, "in-10-days", not_after=now + timedelta(days=10))
    _enroll(server, "in-40-days", not_after=now + timedelta(days=40))
    _enroll(server, "expired", not_after=now - timedelta(days=1))
    _revoke(server, _enroll(server, "revoked-in-5-days", not_after=now + timedelta(days=5)))
    expected = [_hex(in_10_days), _hex(in_20_days)]
    assert _json_serials(cli("certs", "expiring", "--within", "30d", "--json")) == expected
    assert _json_serials(cli("certs", "expiring", "--json")) == expected  # 30 days by default
    assert _json_serials(cli("certs", "expiring", "--within", "2w", "--json")) == [_hex(in_10_days)]
    assert _json_serials(cli("certs", "expiring", "--within", "30d", "--profile", "strict", "--json")) == []
    status, out, _ = cli("certs", "expiring", "--within", "30d")
    header, first, second = out.splitlines()
    assert status == 0 and header.split() == ["SERIAL", "NOT", "AFTER", "LEFT", "PROFILE", "SUBJECT"]
    assert first.split()[0] == _hex(in_10_days) and "9d 23h" in first and first.endswith("CN=in-10-days")
    assert second.split()[0] == _hex(in_20_days)
    status, out, _ = cli("certs", "expiring", "--within", "30d", "--csv")
    assert [row[0] for row in csv.reader(io.StringIO(out, newline=""))] == ["serial", *expected]


def _events(run: Run) -> list[dict[str, Any]]:
    status, out, _ = run
    assert status == 0
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def _record_story(server: ScepTestServer) -> None:
    """A success and a refused challenge on ``default``, a success on ``strict``; the first two days ago."""
    server.enroll(Device(common_name="ok-device"), transaction_id="tx-ok")
    device = Device(common_name="wrong-challenge")
    reply = server.send(server.pkcsreq(device, challenge="not the secret", transaction_id="tx-refused"), device)
    assert reply.status.name == "FAILURE"
    with server.runtime.store.engine.begin() as conn:
        conn.execute(update(scep_events).values(occurred_at=datetime.now(UTC) - timedelta(days=2)))
    server.enroll(Device(common_name="strict-device"), profile="strict", transaction_id="tx-strict")


def test_events_list_filters_by_outcome_profile_time_and_transaction(server: ScepTestServer, cli: Any) -> None:
    _record_story(server)
    every = _events(cli("events", "list", "--json"))
    assert [(e["transaction_id"], e["outcome"]) for e in every] == [
        ("tx-strict", "SUCCESS"), ("tx-refused", "FAILURE:BAD_REQUEST"), ("tx-ok", "SUCCESS"),
    ]
    assert set(every[0]) == set(EVENT_COLUMNS)
    assert (every[0]["profile"], every[0]["operation"], every[0]["message_type"]) == (
        "strict", "PKIOperation", "PKCS_REQ",
    )
    assert "challenge" in every[1]["detail"].lower()
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--outcome", "failure", "--json"))] == [
        "tx-refused"
    ]
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--outcome", "bad_request", "--json"))] == [
        "tx-refused"
    ]
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--outcome", "SUCCESS", "--json"))] == [
        "tx-strict", "tx-ok",
    ]
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--profile", "default", "--json"))] == [
        "tx-refused", "tx-ok",
    ]
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--since", "1d", "--json"))] == ["tx-strict"]
    assert [e["transaction_id"] for e in _events(cli("events", "list", "--until", "1d", "--json"))] == [
        "tx-refused", "tx-ok",
    ]
    assert [e["outcome"] for e in _events(cli("events", "list", "--transaction-id", "tx-refused", "--json"))] == [
        "FAILURE:BAD_REQUEST"
    ]


def test_events_table_escapes_what_a_device_chose(server: ScepTestServer, cli: Any) -> None:
    server.runtime.store.record_operation(
        profile="default", operation="PKIOperation", message_type=None, transaction_id="tx\x1b[31mred",
        outcome="FAILURE:BAD_MESSAGE_CHECK", detail="bad\nline", requester_ip="192.0.2.9",
    )
    status, out, _ = cli("events", "list")
    header, row = out.splitlines()
    assert status == 0 and header.startswith("OCCURRED (UTC)")
    assert "\x1b" not in row and "tx\\1B[31mred bad\\0Aline" in row and "FAILURE:BAD_MESSAGE_CHECK" in row


def test_limit_cuts_the_report_and_says_so_on_stderr(server: ScepTestServer, cli: Any) -> None:
    first, second = _enroll(server, "first"), _enroll(server, "second")
    status, out, err = cli("certs", "list", "--limit", "1", "--json")
    assert status == 0 and [row["serial"] for row in json.loads(out)] == [_hex(second)]
    assert "more certificates match; the first 1 are shown" in err
    status, out, err = cli("certs", "list", "--limit", "2", "--json")
    assert [row["serial"] for row in json.loads(out)] == [_hex(second), _hex(first)] and "more" not in err
    status, out, err = cli("events", "list", "--limit", "1", "--json")
    assert status == 0 and len(json.loads(out)) == 1 and "more events match" in err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["certs", "list", "--since", "yesterday"], "--since 'yesterday' is neither a duration"),
        (["certs", "list", "--since", "2026-05-01T08:00:00"], "has no time zone"),
        (["certs", "list", "--until", "7x"], "--until '7x' is neither a duration"),
        (["certs", "list", "--since", "1d", "--until", "7d"], "--since '1d' is not before --until '7d'"),
        (["certs", "list", "--since", "0d"], "must be a positive duration"),
        (["certs", "list", "--since", "999999999d"], "beyond the calendar"),
        (["certs", "list", "--json", "--csv"], "--json and --csv do not go together"),
        (["certs", "list", "--limit", "0"], "the limit must be at least 1"),
        (["certs", "expiring", "--within", "0d"], "--within '0d' must be a positive duration"),
        (["certs", "expiring", "--within=-5d"], "--within '-5d' is not a duration"),
        (["certs", "expiring", "--within", "2026-05-01T08:00:00Z"], "is not a duration"),
        (["certs", "expiring", "--json", "--csv"], "--json and --csv do not go together"),
        (["events", "list", "--outcome", "bogus"], "--outcome 'bogus' is not an outcome; use one of success"),
        (["events", "list", "--since", "soon"], "--since 'soon' is neither a duration"),
        (["events", "list", "--json", "--csv"], "--json and --csv do not go together"),
    ],
)
def test_bad_input_is_one_line_and_status_2(server: ScepTestServer, cli: Any, argv: list[str], problem: str) -> None:
    _enroll(server, "present")
    line = _one_line_error(cli(*argv))
    assert problem in line, line
