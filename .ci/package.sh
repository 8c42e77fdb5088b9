#!/usr/bin/env bash
# Packaging check (issue 13): builds the Debian package with cargo-deb, installs it with dpkg,
# starts the binary the way custody.service does (the custody user, /etc/custody/custody.toml via
# CUSTODY_CONFIG, the state in /var/lib/custody), checks /healthz and `custody migrate status`,
# removes the package; then builds the container image (Containerfile) with podman on a locally
# debootstrapped debian:bookworm-slim, runs it, checks /healthz from the host and
# `custody --version` inside.
#
# Profile: by default the package is built from the `dev` profile, which `cargo test --workspace`
# has just built (so cargo-deb only strips and packs it): a release build with thin LTO takes well
# over ten minutes on two cores, and this check is about the package (files, user, unit, conffile,
# maintainer scripts, image), not about code generation. CUSTODY_DEB_PROFILE=release builds the
# package that ships. SKIP_CONTAINER=1 skips the podman part.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
profile="${CUSTODY_DEB_PROFILE:-dev}"
cargo_deb_version="3.8.0"
# Free ports picked by the kernel (other servers may run on this machine).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
container_port=$(free_port)
start=$(date +%s)

log "cargo-deb $cargo_deb_version"
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

log "build (profile $profile)"
cargo build -p custody-server --bin custody --profile "$profile"
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
gen="$out_dir/packaging"
rm -rf "$gen" && mkdir -p "$gen/man" "$gen/completions"
"$out_dir/custody" generate-man "$gen/man" >/dev/null
"$out_dir/custody" completions bash >"$gen/completions/custody.bash"
"$out_dir/custody" completions zsh >"$gen/completions/_custody"
"$out_dir/custody" completions fish >"$gen/completions/custody.fish"

log "cargo deb"
deb=$(cargo deb -p custody-server --no-build --profile "$profile" 2>&1 | tail -n1)
echo "$deb"
test -f "$deb"
dpkg-deb --info "$deb" | sed -n '1,40p'
contents=$(dpkg-deb --contents "$deb")
echo "$contents"
for path in ./usr/bin/custody ./lib/systemd/system/custody.service ./etc/custody/custody.toml \
  ./usr/share/man/man1/custody.1 ./usr/share/bash-completion/completions/custody \
  ./usr/share/zsh/vendor-completions/_custody ./usr/share/fish/vendor_completions.d/custody.fish; do
  grep -q " $path\$" <<<"$contents" || { echo "missing from the package: $path"; exit 1; }
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/custody/custody.toml <<<"$conffiles" || { echo "custody.toml is not a conffile"; exit 1; }

cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "${container:-}" ] && podman rm -f "$container" >/dev/null 2>&1 || true
  dpkg -s custody >/dev/null 2>&1 && dpkg --purge custody >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "dpkg -i"
dpkg --purge custody >/dev/null 2>&1 || true
dpkg -i "$deb"
getent passwd custody
test "$(stat -c %U:%a /var/lib/custody)" = "custody:700"
test "$(stat -c %G:%a /etc/custody/custody.toml)" = "custody:640"
systemd-analyze verify /lib/systemd/system/custody.service 2>/dev/null || echo "(systemd-analyze not available or no systemd: unit not verified)"
custody --version

log "serve as the unit does (custody user, CUSTODY_CONFIG, /var/lib/custody)"
cd /var/lib/custody
setpriv --reuid=custody --regid=custody --init-groups --no-new-privs -- \
  env -i PATH=/usr/bin:/bin CUSTODY_CONFIG=/etc/custody/custody.toml CUSTODY_DATA_DIR=/var/lib/custody \
  CUSTODY_LISTEN="127.0.0.1:$port" /usr/bin/custody serve >/tmp/custody-package-serve.log 2>&1 &
server_pid=$!
cd - >/dev/null
for _ in $(seq 1 100); do
  kill -0 "$server_pid" 2>/dev/null || { cat /tmp/custody-package-serve.log; exit 1; }
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
kill -0 "$server_pid" # it is our server that answered
curl -fsS "http://127.0.0.1:$port/healthz"; echo
test -f /var/lib/custody/admin-token && test "$(stat -c %U /var/lib/custody/admin-token)" = custody
runuser -u custody -- env CUSTODY_CONFIG=/etc/custody/custody.toml CUSTODY_DATA_DIR=/var/lib/custody \
  custody migrate status --output table
runuser -u custody -- sh -c 'cd /var/lib/custody && custody --url http://127.0.0.1:'"$port"' \
  --admin-token-file /var/lib/custody/admin-token apps list --output json' >/tmp/custody-package-apps.json
grep -qx '\[\]' /tmp/custody-package-apps.json
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=

log "dpkg --remove"
dpkg --remove custody
test ! -e /usr/bin/custody
test -d /var/lib/custody # the state stays
dpkg --purge custody
echo "package check: $(( $(date +%s) - start )) s"

if [ "${SKIP_CONTAINER:-0}" = 1 ]; then
  echo "SKIP_CONTAINER=1: container check skipped"
  exit 0
fi

log "podman"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap
fi
# This machine's container facts (issue 13): runc, and ulimits podman can set.
if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
fi
if ! podman image exists docker.io/library/debian:bookworm-slim; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | podman import - docker.io/library/debian:bookworm-slim
  rm -rf "$rootfs"
fi

log "podman build"
context=$(mktemp -d)
cp Containerfile "$context/"
cp "$deb" "$context/custody.deb"
podman build --format docker --pull=never -t localhost/custody:ci -f "$context/Containerfile" "$context"
rm -rf "$context"

log "podman run"
container=$(podman run -d -p "127.0.0.1:$container_port:8080" -v custody-ci-data:/var/lib/custody localhost/custody:ci)
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$container_port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$container_port/healthz"; echo
podman exec "$container" custody --version
# The image's HEALTHCHECK command itself (podman schedules it through systemd timers, which this
# machine does not run, hence its "unable to get systemd connection" messages above).
podman healthcheck run "$container" && echo "healthcheck: healthy"
test "$(podman exec "$container" id -un)" = custody
podman rm -f "$container" >/dev/null; container=
podman volume rm custody-ci-data >/dev/null
echo "package and container check: $(( $(date +%s) - start )) s"
