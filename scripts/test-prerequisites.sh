#!/usr/bin/env bash
# What `npm test` needs beyond npm packages, installed when missing:
#   redis-server          a private Redis per test run (started by the suite on a random port)
#   prometheus, promtool  the monitoring tests (shipped rules, a real scrape)
#   chromium              the audit report's HTML, read as a person would
#   openssl               the README's operator-CA command, run as written
# Debian and Ubuntu: installed with apt-get (as root, or through sudo), saying
# so. Anything installed that starts a service by itself (Debian's prometheus
# package) is stopped again, by PID. Elsewhere: prints what to install.
set -euo pipefail

missing_packages=()
need() { command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2"); }
need redis-server redis-server
need prometheus prometheus
need promtool prometheus
need chromium chromium
need openssl openssl

if [ ${#missing_packages[@]} -eq 0 ]; then exit 0; fi
# One package per name, in order.
mapfile -t packages < <(printf '%s\n' "${missing_packages[@]}" | awk '!seen[$0]++')

if ! command -v apt-get >/dev/null 2>&1; then
  echo "npm test needs: ${packages[*]} (redis-server, prometheus with promtool, chromium, openssl)." >&2
  echo "Install them with your system's package manager (macOS: brew install redis prometheus chromium), then run npm test again." >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "npm test needs ${packages[*]}: install them as root (apt-get install ${packages[*]})" >&2; exit 1; }
  sudo=(sudo)
fi

echo "npm test: installing ${packages[*]} with apt-get (needed by the test suite)" >&2
running_before=" $(pgrep -f '^/usr/bin/prometheus' | tr '\n' ' ' || true) "
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
# Debian's prometheus package may start its own service (:9090, node-exporter on :9100) where an
# init system lets it: the tests never use it, so stop what the install started, and nothing that ran before.
for pid in $(pgrep -f '^/usr/bin/prometheus' || true); do
  case "$running_before" in *" $pid "*) ;; *) "${sudo[@]}" kill "$pid" 2>/dev/null || true ;; esac
done
