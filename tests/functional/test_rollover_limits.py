"""Which RAs open requests: a replaced RA only within its grace period, the RA of a CA a rollover
replaced only for ca.ra_grace_days after the activation, the staged CA's RA not before activation; and a
CA name that is no plain URL segment, or a leftover generation directory, does not break a stage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from scep_server.ca.authority import rotate_ra
from scep_server.ca.generations import activate, load_generations, read_state, stage_next
from scep_server.scep import client
from scep_server.scep.types import FailInfo, PKIStatus
from tests.functional.conftest import CONFIG, Device, ScepTestServer, make_config, serving


def send_to(server: ScepTestServer, recipient: x509.Certificate, trusted: list[x509.Certificate]) -> client.CertRep:
    device = Device(common_name="limits-device")
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key, recipient=recipient)
    response = server.post(built.der)
    assert response.status_code == 200, response.get_data(as_text=True)
    return client.parse_cert_rep(response.data, request=built, signer_key=device.key, signer_cert=device.signer,
                                 trusted_signers=trusted)


def refused(rep: client.CertRep) -> bool:
    return rep.status is PKIStatus.FAILURE and rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


def test_a_replaced_ra_opens_requests_only_within_its_grace_period(server: ScepTestServer) -> None:
    config = server.runtime.config
    old_ra = server.ca.ra_cert
    long_ago = datetime.now(UTC) - timedelta(days=config.ca.ra_grace_days + 1)
    rotate_ra(config.ca_dir, server.ca, config.ca, None, now=long_ago)  # its grace ended yesterday
    server.runtime.authority.refresh()
    assert server.ca.ra_cert != old_ra
    assert refused(send_to(server, old_ra, [server.ca.ra_cert, old_ra]))
    assert send_to(server, server.ca.ra_cert, [server.ca.ra_cert]).status is PKIStatus.SUCCESS


def test_the_staged_ra_opens_nothing_before_activation(server: ScepTestServer) -> None:
    config = server.runtime.config
    staged = stage_next(config.ca_dir, config.ca, None)
    server.runtime.authority.refresh()
    assert refused(send_to(server, staged.ca.ra_cert, [server.ca.ra_cert, staged.ca.ra_cert]))


def test_the_replaced_ca_s_ra_opens_requests_for_the_grace_period_after_activation(server: ScepTestServer) -> None:
    config = server.runtime.config
    old_ra = server.ca.ra_cert
    stage_next(config.ca_dir, config.ca, None)
    activate(config.ca_dir, config.ca)
    server.runtime.authority.refresh()
    assert send_to(server, old_ra, [old_ra]).status is PKIStatus.SUCCESS  # within the grace period
    generations = load_generations(config.ca_dir, config.ca, None)
    retired = generations.retired[0]
    assert retired.decrypts_until is not None
    assert [g.label for g in generations.decrypting(datetime.now(UTC))] == [
        generations.active.label, retired.label]
    assert [g.label for g in generations.decrypting(retired.decrypts_until + timedelta(seconds=1))] == [
        generations.active.label]


@pytest.fixture
def oddly_named(tmp_path: Path) -> Iterator[ScepTestServer]:
    template = CONFIG.replace("name: test-ca", 'name: "Corp Issuing CA/EU"')
    with serving(make_config(tmp_path, template)) as started:
        yield started


def test_a_ca_name_that_is_no_plain_segment_still_stages_and_loads(oddly_named: ScepTestServer) -> None:
    config = oddly_named.runtime.config
    staged = stage_next(config.ca_dir, config.ca, None)
    assert staged.label == "Corp-Issuing-CA-EU-g2"
    activate(config.ca_dir, config.ca)
    assert load_generations(config.ca_dir, config.ca, None).active.label == staged.label
    oddly_named.runtime.authority.refresh()
    assert oddly_named.http.get(f"/ca/{staged.label}.crt").status_code == 200


def test_a_leftover_generation_directory_is_skipped_never_overwritten(server: ScepTestServer) -> None:
    config = server.runtime.config
    leftover = config.ca_dir / "generations" / "test-ca-g2"
    leftover.mkdir(parents=True)
    (leftover / "ca.key").write_text("a key the index does not name")
    staged = stage_next(config.ca_dir, config.ca, None)
    assert staged.label == "test-ca-g3" and read_state(config.ca_dir, config.ca.name).next == "test-ca-g3"
    assert (leftover / "ca.key").read_text() == "a key the index does not name"


def test_the_replaced_ca_s_ra_is_refused_once_that_grace_period_is_over(server: ScepTestServer) -> None:
    config = server.runtime.config
    old_ra = server.ca.ra_cert
    stage_next(config.ca_dir, config.ca, None)
    activate(config.ca_dir, config.ca, now=datetime.now(UTC) - timedelta(days=config.ca.ra_grace_days + 1))
    server.runtime.authority.refresh()
    assert refused(send_to(server, old_ra, [server.ca.ra_cert, old_ra]))
    assert send_to(server, server.ca.ra_cert, [server.ca.ra_cert]).status is PKIStatus.SUCCESS
