"""OperationStatus: the audit column and the metrics label keep the strings they always had."""

from __future__ import annotations

import pytest

from scep_server.errors import FailInfo
from scep_server.service.outcome import OperationStatus


@pytest.mark.parametrize("fail_info", list(FailInfo))
def test_each_fail_info_has_its_failure_status(fail_info: FailInfo) -> None:
    status = OperationStatus.failure(fail_info)
    assert status == f"FAILURE:{fail_info.name}" and str(status) == f"FAILURE:{fail_info.name}"


def test_the_other_statuses_are_their_names() -> None:
    assert (str(OperationStatus.SUCCESS), str(OperationStatus.PENDING)) == ("SUCCESS", "PENDING")
    assert len(OperationStatus) == 2 + len(FailInfo)
