"""The Intune rows: our ``intune`` profile against the Intune emulator (its own process), with
validateRequest and successNotification answering after ``--intune-latency`` seconds each.

Per row a fresh emulator and a fresh server: the emulator's counters and records then belong to that
row alone. Each device gets its own challenge, minted through the emulator's admin API for a spec with
a unique subject (what Intune puts in the device's SCEP profile); each device opens its own connection
for its enrollment. Checked after the window, from the emulator's admin API: one validateRequest and
one successNotification per certificate, and how often the server fetched tokens and ran discovery.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench import load
from bench.context import Bench, add_error, endpoint, load_row, say
from bench.enrollment import check_ours, plan, run_ours
from bench.machine import pid_cpu, pid_peak_rss_mb
from bench.messages import build_intune
from bench.report import Kind, Row
from bench.servers import BenchServer, Emulator, emulator_process, our_config, sqlite_url
from scep_server.intune.contract import ChallengeSpec

PROFILE = "intune"
MINTERS = 8
LATENT = ("validateRequest", "successNotification")


class Admin:
    """The emulator's admin API (scep_server.emulator.admin), one session per thread that uses it."""

    def __init__(self, emulator: Emulator) -> None:
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(emulator.ca_bundle)
        self.session.headers["Authorization"] = f"Bearer {emulator.admin_token}"
        self.url = emulator.url

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.request(method, self.url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json() if response.content else None

    def mint(self, spec: ChallengeSpec) -> str:
        return str(self.call("POST", "/admin/challenges", spec.to_json())["challenge"])

    def values(self, path: str) -> list[dict[str, Any]]:
        return list(self.call("GET", path)["value"])


def _mint_all(emulator: Emulator, specs: Sequence[ChallengeSpec]) -> list[tuple[ChallengeSpec, str]]:
    admins = [Admin(emulator) for _ in range(MINTERS)]
    chunks = [specs[i::MINTERS] for i in range(MINTERS)]

    def mint(admin: Admin, chunk: Sequence[ChallengeSpec]) -> list[tuple[ChallengeSpec, str]]:
        return [(spec, admin.mint(spec)) for spec in chunk]

    with ThreadPoolExecutor(MINTERS) as threads:
        minted = list(threads.map(mint, admins, chunks))
    return [pair for chunk in minted for pair in chunk]


def _server_config(tmp: Path, emulator: Emulator) -> dict[str, Any]:
    intune = {**emulator.settings(), "provider_name_and_version": "scep-server-bench/1.0"}
    return our_config(tmp / "var", intune=intune, profiles={PROFILE: {"challenge": {"type": "intune"}}})


def rows(bench: Bench) -> list[Row]:
    return [one(bench, devices) for devices in bench.args.devices]


def one(bench: Bench, devices: int) -> Row:
    key, latency = f"intune-{devices}", bench.args.intune_latency
    label = f"ours, Intune, {latency * 1000:.0f} ms Intune latency, {devices} devices"
    count = max(bench.args.requests, 4 * devices)
    with tempfile.TemporaryDirectory(dir=bench.root, prefix=f"{key}-") as tmp_name:
        tmp = Path(tmp_name)
        with emulator_process(tmp / "emulator") as emulator:
            admin = Admin(emulator)
            for name in LATENT:
                if latency > 0:
                    admin.call("POST", "/admin/faults", {"endpoint": name, "latency": latency})
            with BenchServer(tmp, _server_config(tmp, emulator), bench.args.workers, bench.args.threads) as server:
                found = endpoint(server.url(PROFILE))
                say(f"{key}: {server.url(PROFILE)}; minting {count} challenges, building the PKCSReqs")
                specs = [ChallengeSpec(subject=f"CN=bench-{key}-{os.getpid()}-{i},O=scep-server bench")
                         for i in range(count)]  # fmt: skip
                messages = build_intune(bench.pool, bench.keys, found.recipient, _mint_all(emulator, specs))
                before = admin.call("GET", "/admin/counters")
                say(f"{key}: driving {devices} devices for up to {bench.args.duration:.0f} s")
                load_plan = plan(bench, server.port, f"/scep/{PROFILE}", messages, found, concurrency=devices,
                                 keep_alive=False)  # fmt: skip
                extra = {"emulator": lambda: pid_cpu(emulator.pid)}
                result, stored, peak = run_ours(server, load_plan, sqlite_url(tmp / "var"), extra=extra,
                                                settle=lambda: _settle(admin))  # fmt: skip
            calls = _diff(admin.call("GET", "/admin/counters"), before)
            records = admin.values("/admin/validations"), admin.values("/admin/notifications")
            emulator_peak = pid_peak_rss_mb(emulator.pid)
    row = load_row(bench, key, label, Kind.OURS, result, ["server"])
    check_ours(row, result, stored, peak)
    _check_intune(row, result, calls, *records)
    if result.sent:
        row.notes.append(f"emulator CPU {result.cpu['emulator'] / result.sent * 1000:.1f} ms/op, "
                         f"RSS {emulator_peak or 0:.0f} MB")  # fmt: skip
    return row


def _settle(admin: Admin, quiet: float = 1.0, at_most: float = 15.0) -> None:
    """Wait until Intune has stopped receiving calls (notifications a server may send after answering)."""
    deadline, last, still_since = time.monotonic() + at_most, None, time.monotonic()
    while time.monotonic() < deadline:
        calls = admin.call("GET", "/admin/counters")
        if calls != last:
            last, still_since = calls, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        time.sleep(0.2)


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _check_intune(row: Row, result: load.LoadResult, calls: dict[str, int], validations: list[dict[str, Any]],
                  notifications: list[dict[str, Any]]) -> None:  # fmt: skip
    """One validateRequest and one successNotification per certificate; token and discovery counts."""
    ok = result.ok or 1
    per_tid = Counter(v["transactionId"] for v in validations if v.get("code") == "Success")
    notified = Counter(n["transactionId"] for n in notifications if n.get("type") == "success")
    row.notes.append(f"per certificate {calls.get('validateRequest', 0) / ok:.2f} validateRequest, "
                     f"{calls.get('successNotification', 0) / ok:.2f} successNotification")  # fmt: skip
    tokens = sum(v for k, v in calls.items() if k.startswith("tokens:"))
    row.notes.append(f"fetched: tokens {tokens}, discovery {calls.get('discovery', 0)}, "
                     f"OpenID metadata {calls.get('openid-configuration', 0)}")  # fmt: skip
    row.extra.update(intune_calls=calls)
    twice = sum(1 for n in per_tid.values() if n > 1) + sum(1 for n in notified.values() if n > 1)
    if twice:
        add_error(row, "a transaction was validated or notified more than once", twice)
    if sum(notified.values()) != result.ok:
        add_error(row, f"{sum(notified.values())} success notifications for {result.ok} certificates",
                  abs(sum(notified.values()) - result.ok))  # fmt: skip
    failures = calls.get("failureNotification", 0)
    if failures:
        row.notes.append(f"{failures} failureNotifications")
