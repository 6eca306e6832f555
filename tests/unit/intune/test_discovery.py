"""Graph service discovery: the answer's shape, the endpoint, and the cache of service URLs (intune-api.md §3)."""

from __future__ import annotations

import threading

import pytest

from scep_server.config import IntuneConfig
from scep_server.errors import IntuneProtocolError
from scep_server.intune.discovery import ServiceDirectory, discovery_url, service_map

SCEP = "ScepRequestValidationFEService"
GOOD = "https://fef.msua06.manage.microsoft.com/ScepRequestValidationFEService/"


def test_discovery_url_names_the_intune_app_of_the_tenant() -> None:
    config = IntuneConfig(graph_resource_url="https://graph.microsoft.us/", graph_api_version="1.0",
                          intune_app_id="0000000a-0000-0000-c000-000000000000")
    assert discovery_url(config) == (
        "https://graph.microsoft.us/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"
    )


def test_service_map_lower_cases_names_and_skips_incomplete_entries() -> None:
    body = {"value": [
        {"providerName": SCEP, "uri": GOOD},
        {"providerName": "PkiConnectorFEService"},
        {"providerName": 7, "uri": "https://x.manage.microsoft.com/"},
    ]}
    assert service_map(body) == {SCEP.lower(): GOOD}


@pytest.mark.parametrize("body", [None, [], {"value": {}}, {"other": []}, {"value": ["not an object"]}])
def test_service_map_refuses_other_shapes(body: object) -> None:
    with pytest.raises(IntuneProtocolError, match="Graph service discovery"):
        service_map(body)


def test_directory_discovers_once_and_again_after_forget() -> None:
    directory = ServiceDirectory(["manage.microsoft.com"])
    lookups: list[int] = []

    def discover() -> dict[str, str]:
        lookups.append(1)
        return {SCEP.lower(): GOOD}

    assert directory.url(SCEP, "a1", discover) == GOOD.rstrip("/")
    assert directory.url(SCEP.upper(), "a2", discover) == GOOD.rstrip("/")
    assert len(lookups) == 1
    directory.forget()
    directory.url(SCEP, "a3", discover)
    assert len(lookups) == 2


def test_directory_concurrent_callers_share_one_discovery() -> None:
    directory = ServiceDirectory(["manage.microsoft.com"])
    started, lookups = threading.Event(), []

    def discover() -> dict[str, str]:
        lookups.append(1)
        started.wait(0.2)
        return {SCEP.lower(): GOOD}

    threads = [threading.Thread(target=directory.url, args=(SCEP, "a", discover)) for _ in range(5)]
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join()
    assert len(lookups) == 1


def test_directory_refuses_missing_and_off_list_services_without_rediscovering() -> None:
    directory = ServiceDirectory(["manage.microsoft.com"])
    directory.replace({SCEP.lower(): "https://intune.evil.example/scep"})

    def discover() -> dict[str, str]:
        raise AssertionError("the directory already knows the services")

    with pytest.raises(IntuneProtocolError, match="intune.evil.example is not in intune.allowed_service_hosts") as off:
        directory.url(SCEP, "a1", discover)
    assert off.value.activity_id == "a1"
    with pytest.raises(IntuneProtocolError, match="lists no PkiConnectorFEService"):
        directory.url("PkiConnectorFEService", "a2", discover)
    assert directory.problem(GOOD) is None
