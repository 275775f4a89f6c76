#!/usr/bin/env bash
# Builds target/packages/flowctl_<version>_<arch>.deb and flowctl-<version>-1.<arch>.rpm:
# release binaries of flowctl and flowctl-sup, the bundled components staged for
# /usr/lib/flowctl/, then cargo-deb and cargo-generate-rpm (installed when missing).
#
#   packaging/build.sh            both packages
#   packaging/build.sh deb|rpm    one of them
#
# FLOWCTL_PACKAGE_PROFILE=dev packages the debug build instead of a release one (CI uses it to
# test the packages without a second, optimised build of the workspace).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case $what in all|deb|rpm) ;; *) echo "usage: $0 [deb|rpm]" >&2; exit 2 ;; esac

out=target/packages
stage=$out/stage/lib
# The components flowctl ships, by binary name; each is bundled once the workspace builds it.
components=(stellar-live-source ttp-processor ttp-sink stellar-arrow-source ttp-arrow-processor arrow-analytics-sink
    contract-data-processor contract-data-sink)

need_tool() { # cargo subcommand, crate
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "build.sh: installing $2" >&2
        cargo install --locked "$2"
    fi
}
[ "$what" = rpm ] || need_tool deb cargo-deb
[ "$what" = deb ] || need_tool generate-rpm cargo-generate-rpm

profile=${FLOWCTL_PACKAGE_PROFILE:-release}
case $profile in dev) bin=target/debug ;; *) bin=target/$profile ;; esac

t0=$(date +%s)
cargo build --profile "$profile" --locked --bin flowctl --bin flowctl-sup
# The bundled components are the binaries of the flowctl-components crate.
cargo build --profile "$profile" --locked -p flowctl-components --bins

rm -rf "$out/stage"
mkdir -p "$stage"
for c in "${components[@]}"; do
    if [ -x "$bin/$c" ]; then
        cp "$bin/$c" "$stage/"
    else
        echo "build.sh: note: component $c is not built by this workspace yet; not bundled" >&2
    fi
done
# The asset glob must match something; the README says what the directory holds.
printf 'Bundled flowctl components: run by flowctl-sup, found by bare name in pipeline files.\n' \
    > "$stage/README"
chmod 644 "$stage/README"
strip "$bin/flowctl" "$bin/flowctl-sup" "$stage"/* 2>/dev/null || true

if [ "$what" != rpm ]; then
    cargo deb --no-build --no-strip --profile "$profile" -p flowctl -o "$out/"
fi
if [ "$what" != deb ]; then
    cargo generate-rpm --profile "$profile" -p . -o "$out/"
fi
ls -l "$out"/*.deb "$out"/*.rpm 2>/dev/null || true
echo "build.sh: done in $(( $(date +%s) - t0 ))s" >&2
