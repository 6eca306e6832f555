"""Audit the locked dependency set (constraints.txt) for published vulnerabilities.

pip-audit asks the package index about each pinned version. Where the index answers only for a
project as a whole (its latest release), pip-audit reports the package as "not found"; for those the
project's own JSON document is read instead, whose ``vulnerabilities`` apply to the latest release,
which is what a fresh lock pins. A pinned version that is neither auditable by pip-audit nor the latest
release is listed as unaudited so that the lock gets refreshed.

Exit status: 0 when no known vulnerability affects the lock, 1 when one does, 2 when the index could
not be asked at all (an audit that asked nobody must not pass).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

INDEX_JSON = "https://pypi.org/pypi/{name}/json"
TIMEOUT = 20


def locked(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def pip_audit(constraints: Path) -> list[dict[str, object]]:
    command = [
        str(Path(sys.executable).with_name("pip-audit")), "-r", str(constraints), "--no-deps", "--disable-pip",
        "--progress-spinner", "off", "--format", "json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(done.stderr, file=sys.stderr)
        raise SystemExit("audit: pip-audit produced no report") from None
    dependencies: list[dict[str, object]] = report["dependencies"]
    return dependencies


def project_document(name: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(INDEX_JSON.format(name=name), timeout=TIMEOUT) as answer:  # noqa: S310
            document: dict[str, object] = json.load(answer)
            return document
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError):
        return None


def advisories(vulns: object) -> list[str]:
    found = []
    for vuln in vulns if isinstance(vulns, list) else []:
        if isinstance(vuln, dict) and not vuln.get("withdrawn"):
            ident = vuln.get("id")
            fixed = ", ".join(vuln.get("fix_versions") or vuln.get("fixed_in") or []) or "no fix"
            found.append(f"{ident} (fixed in {fixed})")
    return found


def main() -> int:
    constraints = Path(sys.argv[1] if len(sys.argv) > 1 else "constraints.txt")
    pins = locked(constraints)
    vulnerable: dict[str, list[str]] = {}
    unaudited: list[str] = []
    asked = 0
    for dependency in pip_audit(constraints):
        name = canonical(str(dependency["name"]))
        version = str(dependency.get("version") or pins.get(name, ""))
        if "skip_reason" not in dependency:
            asked += 1
            if found := advisories(dependency.get("vulns")):
                vulnerable[f"{name}=={version}"] = found
            continue
        document = project_document(name)
        if document is None:
            unaudited.append(f"{name}=={version} (index unreachable)")
            continue
        info = document.get("info")
        latest = str(info.get("version", "")) if isinstance(info, dict) else ""
        if latest != version:
            unaudited.append(f"{name}=={version} (latest is {latest}; refresh the lock)")
            continue
        asked += 1
        if found := advisories(document.get("vulnerabilities")):
            vulnerable[f"{name}=={version}"] = found
    for pin, found in sorted(vulnerable.items()):
        print(f"audit: VULNERABLE {pin}: {'; '.join(found)}")
    for pin in unaudited:
        print(f"audit: not audited {pin}")
    if asked == 0:
        print("audit: the package index could not be asked about any dependency", file=sys.stderr)
        return 2
    print(f"audit: {asked} of {len(pins)} locked packages audited, {len(vulnerable)} vulnerable")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    raise SystemExit(main())
