#!/usr/bin/env bash
# Builds demo/catalog/ from the release folders in demo/releases/ with the real
# `upgram-server publish`, each module's releases oldest first, dependencies before the modules
# that need them. crates/upgram-server/tests/demo.rs runs the same `publish` lines through the
# library and checks the result: keep one command per line, paths relative to demo/, quotes
# only as single quotes around a whole argument.
#
# Usage: demo/publish-demo.sh [PATH/TO/upgram-server]    (default: `cargo run` builds it)
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -ge 1 ]; then
  server=("$(realpath "$1")")
else
  server=(cargo run --quiet --bin upgram-server --)
fi
publish() { "${server[@]}" publish --catalog catalog "$@"; }

rm -rf catalog

publish --module main-program --version 1.0 --from releases/main-program/1.0
publish --module main-program --version 1.1 --from releases/main-program/1.1
publish --module main-module --version 5.0 --from releases/main-module/5.0 --depends 'main-program>=1.0'
publish --module main-module --version 5.1 --from releases/main-module/5.1 --depends 'main-program>=1.1'
publish --module pdf-plugin --version 1.0 --from releases/pdf-plugin/1.0 --depends 'main-module>=5.0'
publish --module pdf-plugin --version 2.0 --from releases/pdf-plugin/2.0 --depends 'main-module>=5.1'
publish --module antivirus-db --version 1.0 --from releases/antivirus-db/1.0
publish --module antivirus-db --version 1.1 --from releases/antivirus-db/1.1
publish --module antivirus-db --version 1.2 --from releases/antivirus-db/1.2
publish --module antivirus-db --version 1.3 --from releases/antivirus-db/1.3 --forced
publish --module antivirus-db --version 1.4 --from releases/antivirus-db/1.4
publish --module driver --version 1.0 --from releases/driver/1.0 --package packages/driver/1.0/install.sh --installer-args --quiet
publish --module driver --version 1.1 --from releases/driver/1.1 --package packages/driver/1.1/install.sh --installer-args --quiet

echo "demo catalog written to $(pwd)/catalog"
