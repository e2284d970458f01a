#!/bin/sh
# Installer of the upgram demo filter driver 1.1: what a real package would do, minus the kernel.
# Usage: install.sh [--quiet]
set -eu
[ "${1:-}" = "--quiet" ] || echo "installing the upgram demo filter driver 1.1"
exit 0
