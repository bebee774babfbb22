# Installs the tools the tests need when they are missing. Sourced by the other scripts.
# shellcheck shell=bash

# The interpreter whose packages we use; pip installs its console scripts next to it.
python_bin=$(command -v python3)
python_scripts=$("$python_bin" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_redis() {
  # openssl makes the test CA of the Redis TLS tests.
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    && command -v openssl >/dev/null && return 0
  echo "ensure-tools: installing Debian redis-server and openssl" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server openssl >/dev/null
  # The package starts a system-wide server on 6379; the tests use their own, so stop it.
  as_root service redis-server stop >/dev/null 2>&1 || true
}

# For the status page's browser test: Debian's Chromium and its ChromeDriver.
ensure_browser() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
  echo "ensure-tools: installing Debian chromium and chromium-driver" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
}

ensure_python_tools() {
  local missing=()
  "$python_bin" -c 'import moto.server, flask, flask_cors' 2>/dev/null || missing+=("moto[server]")
  [ -x "$python_scripts/cfn-lint" ] || missing+=("cfn-lint")
  [ -x "$python_scripts/cargo-lambda" ] || missing+=("cargo-lambda")
  [ -x "$python_scripts/schemathesis" ] || missing+=("schemathesis")
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "ensure-tools: installing ${missing[*]} from PyPI" >&2
  "$python_bin" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
}

# pip puts console scripts (cargo-lambda, cfn-lint) next to the interpreter; `cargo lambda`
# finds its subcommand through PATH.
export PATH="$python_scripts:$PATH"

cfn_lint() {
  "$python_scripts/cfn-lint" "$@"
}

# For `make build`: the arm64 standard library and zig (cargo-lambda cross-links with it;
# PyPI's `ziglang` carries it).
ensure_arm64_toolchain() {
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu
  command -v zig >/dev/null && return 0
  "$python_bin" -c 'import ziglang' 2>/dev/null && return 0
  echo "ensure-tools: installing ziglang from PyPI" >&2
  "$python_bin" -m pip install --quiet --disable-pip-version-check ziglang
}
