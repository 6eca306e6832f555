"""When another handler moves a transaction on while this one works, the device is told to come back (503
with Retry-After), as for an outage: never a 404/409 that shows the transaction's state, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from scep_server.challenge import ValidationRequest
from scep_server.errors import ChallengeRejected, FailInfo
from scep_server.store import CertStatus

from .conftest import Device, make_config, serving


@pytest.mark.parametrize("verdict", ["refuse", "accept"])
def test_a_transaction_failed_by_another_handler_meanwhile_is_a_503(tmp_path: Path, verdict: str) -> None:
    with serving(make_config(tmp_path)) as server:
        built = server.pkcsreq(Device(), transaction_id="raced-1")
        profile = server.runtime.profiles["default"]
        store = server.runtime.store
        validator = profile.validator

        def validate(request: ValidationRequest) -> None:  # another handler decided the transaction meanwhile
            store.record_failure(profile="default", transaction_id=request.transaction_id,
                                 fail_info=int(FailInfo.BAD_REQUEST), reason="decided elsewhere")
            if verdict == "refuse":
                raise ChallengeRejected("refused", reason="probe")

        object.__setattr__(validator, "validate", validate)
        response = server.post(built.der)

        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.get_data(as_text=True) == "service temporarily unavailable\n"
        assert not [c for c in store.list_certificates(limit=10) if c.status is CertStatus.VALID]
