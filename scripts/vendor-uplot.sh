#!/usr/bin/env bash
# Fetches uPlot (MIT) from the npm registry into vendor/uplot/, which
# `tal report` embeds in every report (no CDN: reports open offline).
# The version and the files' SHA-256 are pinned in vendor/uplot/README.md;
# this script checks them. Needs npm.
# Usage: scripts/vendor-uplot.sh [VERSION=1.6.32]
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-1.6.32}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null && tar xzf uplot-*.tgz)
cp "$work"/package/dist/uPlot.iife.min.js "$work"/package/dist/uPlot.min.css \
  "$work"/package/LICENSE vendor/uplot/
(cd vendor/uplot && grep -E '^[0-9a-f]{64}  ' README.md | sha256sum -c -)
