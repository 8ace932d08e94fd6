#!/usr/bin/env bash
# Vendors uPlot, the console's chart library, into vendor/ (embedded into
# the binary by crates/control/src/console.rs together with src/, the
# console's own plain JavaScript, CSS and HTML, which need no build step
# and are embedded as they are: one copy of each file).
#
# uPlot is installed from npm at the exact version and integrity hash of
# package-lock.json (`npm ci`, no install scripts) and its own prebuilt
# minified files are copied unchanged. Reproducible: the same lock file
# gives byte-identical vendor/ files (`git diff --exit-code vendor` after a
# run checks it). Run it after changing the version in package.json
# (`npm install --package-lock-only uplot@VERSION` first); commit vendor/
# and the lock file.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts >&2
rm -rf vendor
mkdir -p vendor
cp node_modules/uplot/dist/uPlot.iife.min.js vendor/uplot.min.js
cp node_modules/uplot/dist/uPlot.min.css vendor/uplot.min.css
cp node_modules/uplot/LICENSE vendor/uplot.LICENSE
rm -rf node_modules
sha256sum vendor/* >&2
