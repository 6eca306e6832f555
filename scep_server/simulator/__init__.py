"""Simulated Intune devices for Microsoft's third-party CA acceptance matrix (TestMatrix.csv).

Each TestMatrix row is an Intune SCEP profile (``matrix``). For each device the simulator mints the
challenge through the Intune emulator's admin API (``admin``), builds the CSR Intune asks for and
enrolls over SCEP like a device (``device``), then checks the certificate against the profile
(``checks``), or that none was delivered for the failure rows. ``scep-simulator`` runs it (``cli``).
The lifecycle scenario (``lifecycle``) enrolls devices with their ``IntuneDeviceId://`` SAN URI, then
deletes, retires and disables them in Intune and Entra ID through the emulator, and reports as JSON.
A tool of its own: it shares only ``pki/``, ``scep/`` and the Intune contract
(``scep_server.intune.contract``) with the server, and talks to it and to the emulator over HTTP. The
emulator's admin API always needs its bearer token (``EmulatorServer.admin_token``; ``scep-simulator``
takes ``--admin-token`` or ``INTUNE_EMULATOR_ADMIN_TOKEN``)::

    with EmulatorAdmin(emulator.url, ca_bundle=emulator.ca_bundle, token=emulator.admin_token) as admin:
        results = Simulator(admin, Settings(scep_url="http://127.0.0.1:8080/scep")).run(ROWS, devices=2)
"""

from __future__ import annotations

from scep_server.simulator.admin import EmulatorAdmin, EmulatorAdminError, Fault
from scep_server.simulator.lifecycle import LifecycleReport, LifecycleScenario
from scep_server.simulator.matrix import PROFILES, ROWS, DeviceIdentity, Expect, Row, ScepProfile, find_rows
from scep_server.simulator.runner import DeviceResult, Settings, Simulator

__all__ = [
    "PROFILES",
    "ROWS",
    "DeviceIdentity",
    "DeviceResult",
    "EmulatorAdmin",
    "EmulatorAdminError",
    "Expect",
    "Fault",
    "LifecycleReport",
    "LifecycleScenario",
    "Row",
    "ScepProfile",
    "Settings",
    "Simulator",
    "find_rows",
]
