#!/usr/bin/env bash
# Builds flowlogd's .deb and .rpm into target/packages/:
#
#     bash packaging/build-packages.sh
#
# From a clean checkout: installs cargo-deb and cargo-generate-rpm with
# `cargo install --locked` if they are missing, builds release binaries of
# the daemon and of every sink plugin crate under sinks/ (found at run time,
# so a new sinks/<name> is packaged without editing anything here), stages
# the generated files, and runs both tools with the metadata in
# daemon/Cargo.toml ([package.metadata.deb], [package.metadata.generate-rpm]).
#
# Layout under target/:
#   pkg-build/cargo/   the release build (its own target directory: the
#                      remapped RUSTFLAGS would otherwise invalidate the
#                      workspace's usual target/release)
#   pkg-build/cargo/release/pkg-stage/
#                      sinks/<name>.so and man/*.gz; both tools map the
#                      assets' `target/release/` to pkg-build/cargo/release/
#   pkg-build/changelog  the Debian changelog, for this version
#   packages/          the .deb and the .rpm
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

readonly CARGO_DEB_VERSION=3.8.0
readonly CARGO_GENERATE_RPM_VERSION=0.21.1

build_dir=$root/target/pkg-build
stage=$build_dir/cargo/release/pkg-stage
out=$root/target/packages

log() { echo "build-packages: $*"; }
die() {
    echo "build-packages: $*" >&2
    exit 1
}

# --- tools -----------------------------------------------------------------
for tool in gzip strip; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install gzip binutils)"
done
# Optional, for exact libc dependencies: dpkg-shlibdeps for the .deb, rpm's
# find-requires (versioned glibc symbols) for the .rpm.
command -v dpkg-shlibdeps >/dev/null ||
    log "warning: dpkg-shlibdeps missing (apt-get install dpkg-dev): cargo-deb guesses the libc dependency"
[[ -x /usr/lib/rpm/find-requires ]] ||
    log "warning: /usr/lib/rpm/find-requires missing (apt-get install rpm): the .rpm requires unversioned libc"
# opt-level 1 (cargo-deb's own choice) builds them about a third faster;
# they run for seconds.
if ! command -v cargo-deb >/dev/null; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
fi
if ! command -v cargo-generate-rpm >/dev/null; then
    log "installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
fi

# --- which plugins ---------------------------------------------------------
# Every sinks/*/Cargo.toml is a plugin crate named flowlogd-sink-<name>,
# installed as /usr/lib/flowlogd/sinks/<name>.so (what `plugin = "<name>"`
# loads).
sink_crates=()
sink_names=()
for manifest in sinks/*/Cargo.toml; do
    [[ -f $manifest ]] || continue
    crate=$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -n 1)
    [[ $crate == flowlogd-sink-* ]] ||
        die "$manifest: package name \"$crate\" does not follow flowlogd-sink-<name>"
    cargo pkgid --locked -p "$crate" >/dev/null 2>&1 ||
        die "$manifest: $crate is not a member of the workspace (add $(dirname "$manifest") to Cargo.toml's members)"
    sink_crates+=("$crate")
    sink_names+=("${crate#flowlogd-sink-}")
done
((${#sink_crates[@]})) || die "no sink plugin crates under sinks/"
log "plugins: ${sink_names[*]}"

# --- release build ---------------------------------------------------------
# No build-time paths in the binaries: the checkout, the cargo registry and
# the toolchain are remapped (panic locations, file!()). Symbols are
# stripped at link time, for the .rpm too (cargo-generate-rpm strips
# nothing); the plugins keep their dynamic symbols.
export CARGO_TARGET_DIR=$build_dir/cargo
export CARGO_PROFILE_RELEASE_STRIP=symbols
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$root=/usr/src/flowlogd --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
packages=(-p flowlogd)
for crate in "${sink_crates[@]}"; do
    packages+=(-p "$crate")
done
log "cargo build --release --locked ${packages[*]}"
cargo build --release --locked "${packages[@]}"

# --- stage generated files -------------------------------------------------
rm -rf "$stage"
mkdir -p "$stage/sinks" "$stage/man"
for i in "${!sink_crates[@]}"; do
    lib=$CARGO_TARGET_DIR/release/lib${sink_crates[$i]//-/_}.so
    [[ -f $lib ]] || die "${sink_crates[$i]} built no $lib (is it a cdylib?)"
    install -m 0644 "$lib" "$stage/sinks/${sink_names[$i]}.so"
done
for page in flowlogd.8 flowlogd.toml.5; do
    gzip -9n <"packaging/man/$page" >"$stage/man/$page.gz"
done

version=$(cargo pkgid --locked -p flowlogd)
version=${version##*[@#]}
# One date for the changelog and the archives' timestamps: the commit's,
# so that rebuilding a commit gives the same packages.
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
maintainer=$(sed -n 's/^maintainer *= *"\([^"]*\)".*/\1/p' daemon/Cargo.toml | head -n 1)
cat >"$build_dir/changelog" <<EOF
flowlogd ($version-1) unstable; urgency=medium

  * flowlogd $version.

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# --- packages --------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/flowlogd_*.deb "$out"/flowlogd-*.rpm
log "cargo deb"
cargo deb --locked --no-build -p flowlogd --output "$out/"
log "cargo generate-rpm"
cargo generate-rpm -p daemon --target-dir "$CARGO_TARGET_DIR" --output "$out/"
log "built:"
ls -l "$out"/flowlogd_*.deb "$out"/flowlogd-*.rpm
