#!/usr/bin/env bash
# Debian packages the interop tests drive: micromdm scepclient/scepserver (scep), certmonger with
# its scep-submit helper, dbus-daemon for certmonger's private session bus, the openssl CLI, and
# prometheus for promtool, which checks and unit-tests deploy/prometheus/alerts.yml (the daemon is not run),
# and chromium, the headless browser the console tests drive with Playwright (executable_path=/usr/bin/chromium).
# Idempotent: installs only what is missing, with one `apt-get update`; a no-op when all are present.
set -euo pipefail

# Extra package names may be given as arguments (start-postgres.sh passes postgresql).
PACKAGES=(scep certmonger dbus-daemon openssl softhsm2 prometheus chromium "$@")

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: ${PACKAGES[*]} already installed"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
