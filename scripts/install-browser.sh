#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the report's browser test (tests/test_report_html.py),
# then prints their versions. Idempotent: with both already there it installs nothing. Run as root (CI is).
#   bash scripts/install-browser.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

install() { apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    # update the package lists only when needed: when apt cannot see the packages yet (a fresh machine),
    # or when the install fails on lists gone stale
    if ! apt-cache show chromium-driver >/dev/null 2>&1; then
        apt-get update -qq
    fi
    install || { apt-get update -qq && install; }
fi

# Debian's chromium wrapper may warn on stderr about its memory check; only the version matters here
chromium --version 2>/dev/null
chromedriver --version
