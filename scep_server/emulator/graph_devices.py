"""Microsoft Graph's device endpoints: Intune's managed devices and Entra ID's devices (see ``devices``).

====================================================================  ===========================================
``GET /graph/{v}/deviceManagement/managedDevices/{id}``               a managedDevice; 404 ResourceNotFound
``GET /graph/{v}/deviceManagement/managedDevices``                    ``$filter`` (``id``/``azureADDeviceId eq``),
                                                                      ``$select``, ``$top``, ``@odata.nextLink``
``GET /graph/{v}/devices``                                            ``$filter`` (``deviceId``/``id eq``), ...
``GET /graph/{v}/devices(deviceId='{deviceId}')``, ``/devices/{id}``  a device; 404 Request_ResourceNotFound
``GET /graph/{v}/devices/delta`` (or ``/devices/microsoft.graph.delta()``)  delta rounds, ``$select``
====================================================================  ===========================================

Tokens need the Graph resource and ``DeviceManagementManagedDevices.Read.All`` (managed devices) or
``Device.Read.All`` (devices), or a higher permission Graph accepts instead: 403
``Authorization_RequestDenied`` otherwise. Each group is one fault endpoint: ``graph.managedDevices``,
``graph.devices`` and ``graph.devicesDelta``. Pages hold ``$top`` entities, else as many as the
``Prefer: odata.maxpagesize=N`` header asks, else ``DeviceDirectory.page_size``, for every page of a
listing or a delta round: the links Graph hands out (``@odata.nextLink``, ``@odata.deltaLink``) are
absolute and carry every option of the first request in their token, so a client follows them as they
are (a delta round's page size is the one of its own first request).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from scep_server.emulator.devices import ENTRA_DEVICE_PROPERTIES, MANAGED_DEVICE_PROPERTIES, Page
from scep_server.emulator.odata import GraphQueryError, page_size, parse_filter, parse_select, selected
from scep_server.emulator.tokens import DEVICE_READ_ROLE, MANAGED_DEVICES_READ_ROLE, AccessDenied
from scep_server.emulator.wire import Surface, denied, emulator, endpoint, error, origin

graph_devices = Blueprint("graph_devices", __name__, url_prefix="/graph")
GRAPH_VERSIONS = ("v1.0", "beta")
MANAGED_DEVICE_ROLES = (MANAGED_DEVICES_READ_ROLE, "DeviceManagementManagedDevices.ReadWrite.All")
DEVICE_ROLES = (DEVICE_READ_ROLE, "Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
MAX_MANAGED_DEVICES_PAGE = 1000
MAX_DEVICES_PAGE = 999
_MANAGED_FILTERS = {"id": "id", "azureaddeviceid": "azureADDeviceId"}
_DEVICE_FILTERS = {"id": "id", "deviceid": "deviceId"}
_DIRECTORY_QUERY = "Request_UnsupportedQuery"
_MANAGED_DEVICES = "deviceManagement/managedDevices"


@graph_devices.get(f"/<version>/{_MANAGED_DEVICES}/<device_id>")
@endpoint("graph.managedDevices", Surface.GRAPH)
def managed_device(version: str, device_id: str) -> Response:
    _authorize(version, MANAGED_DEVICE_ROLES)
    select = parse_select(request.args.get("$select"), MANAGED_DEVICE_PROPERTIES, "microsoft.graph.managedDevice")
    device = emulator().devices.managed_device(device_id)
    if device is None:
        return error(Surface.GRAPH, 404, f"Resource not found: managedDevice with id '{device_id}' does not exist.",
                     code="ResourceNotFound")
    return _entity(version, f"{_MANAGED_DEVICES}/$entity", selected(device, select))


@graph_devices.get(f"/<version>/{_MANAGED_DEVICES}")
@endpoint("graph.managedDevices", Surface.GRAPH)
def managed_devices(version: str) -> Response:
    _authorize(version, MANAGED_DEVICE_ROLES)
    skip_token = request.args.get("$skiptoken")
    if skip_token is not None:
        page = emulator().devices.next_page("managedDevices", skip_token)
    else:
        terms = parse_filter(request.args.get("$filter"), _MANAGED_FILTERS, code="BadRequest")
        select = parse_select(request.args.get("$select"), MANAGED_DEVICE_PROPERTIES, "microsoft.graph.managedDevice")
        page = emulator().devices.managed_devices(terms, select, _page_size(MAX_MANAGED_DEVICES_PAGE))
    return _collection(version, _MANAGED_DEVICES, page)


@graph_devices.get("/<version>/devices")
@endpoint("graph.devices", Surface.GRAPH)
def devices(version: str) -> Response:
    _authorize(version, DEVICE_ROLES)
    skip_token = request.args.get("$skiptoken")
    if skip_token is not None:
        page = emulator().devices.next_page("devices", skip_token)
    else:
        terms = parse_filter(request.args.get("$filter"), _DEVICE_FILTERS, code=_DIRECTORY_QUERY)
        page = emulator().devices.entra_devices(terms, _device_select(), _page_size(MAX_DEVICES_PAGE))
    return _collection(version, "devices", page)


@graph_devices.get("/<version>/devices(deviceId='<device_id>')")
@endpoint("graph.devices", Surface.GRAPH)
def device_by_device_id(version: str, device_id: str) -> Response:
    _authorize(version, DEVICE_ROLES)
    return _device(version, device_id, emulator().devices.entra_device(device_id=device_id))


@graph_devices.get("/<version>/devices/<object_id>")
@endpoint("graph.devices", Surface.GRAPH)
def device(version: str, object_id: str) -> Response:
    _authorize(version, DEVICE_ROLES)
    return _device(version, object_id, emulator().devices.entra_device(object_id=object_id))


@graph_devices.get("/<version>/devices/delta")
@graph_devices.get("/<version>/devices/microsoft.graph.delta()")
@endpoint("graph.devicesDelta", Surface.GRAPH)
def devices_delta(version: str) -> Response:
    """A delta round (see ``devices``): options of the first request travel in the tokens."""
    _authorize(version, DEVICE_ROLES)
    size = _page_size(MAX_DEVICES_PAGE, top=False)
    skip_token, delta_token = request.args.get("$skiptoken"), request.args.get("$deltatoken")
    if request.args.get("$filter") is not None:
        raise GraphQueryError("The emulator's devices/delta takes no $filter", _DIRECTORY_QUERY)
    if skip_token is not None:
        page = emulator().devices.next_page("delta", skip_token)
    else:
        page = emulator().devices.delta(delta_token, _device_select(), size)
    body: dict[str, object] = {"@odata.context": f"{origin()}/graph/{version}/$metadata#devices",
                               "value": page.items}
    link = f"{origin()}/graph/{version}/devices/delta"
    if page.skip_token is not None:
        body["@odata.nextLink"] = f"{link}?$skiptoken={page.skip_token}"
    if page.delta_token is not None:
        body["@odata.deltaLink"] = f"{link}?$deltatoken={page.delta_token}"
    return jsonify(body)


def _authorize(version: str, roles: tuple[str, ...]) -> None:
    emulator().authorize(request.headers.get("Authorization"), resource="graph", role=roles, origin=origin())
    if version not in GRAPH_VERSIONS:
        raise GraphQueryError(f"Invalid version: {version}")


def _page_size(maximum: int, *, top: bool = True) -> int:
    if not top and request.args.get("$top") is not None:
        raise GraphQueryError("The emulator's devices/delta takes no $top; send Prefer: odata.maxpagesize=N",
                              _DIRECTORY_QUERY)
    return page_size(request.args.get("$top"), request.headers.get("Prefer"), default=emulator().devices.page_size,
                     maximum=maximum)


def _device_select() -> tuple[str, ...] | None:
    return parse_select(request.args.get("$select"), ENTRA_DEVICE_PROPERTIES, "microsoft.graph.device")


def _device(version: str, requested: str, device: dict[str, object] | None) -> Response:
    select = _device_select()
    if device is None:
        return error(Surface.GRAPH, 404, f"Resource '{requested}' does not exist or one of its queried "
                     "reference-property objects are not present.", code="Request_ResourceNotFound")
    return _entity(version, "devices/$entity", selected(device, select))


def _entity(version: str, context: str, entity: dict[str, object]) -> Response:
    return jsonify({"@odata.context": f"{origin()}/graph/{version}/$metadata#{context}", **entity})


def _collection(version: str, path: str, page: Page) -> Response:
    body: dict[str, object] = {"@odata.context": f"{origin()}/graph/{version}/$metadata#{path}", "value": page.items}
    if page.skip_token is not None:
        body["@odata.nextLink"] = f"{origin()}/graph/{version}/{path}?$skiptoken={page.skip_token}"
    return jsonify(body)


def _query_error(exc: GraphQueryError) -> Response:
    return error(Surface.GRAPH, exc.status, exc.message, code=exc.code)


def _access_denied(exc: AccessDenied) -> Response:
    return denied(Surface.GRAPH, exc)


graph_devices.register_error_handler(GraphQueryError, _query_error)
graph_devices.register_error_handler(AccessDenied, _access_denied)
