# Shared helpers for the ops scripts (sourced, not run).

# The repository root, whatever the caller's working directory.
NERCC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NERCC_ROOT

# Installs the Debian packages the build and the tests need, when any is missing.
nercc_install_packages() {
    local needed=(pkg-config libopenblas-dev librabbitmq-dev rabbitmq-server openssl curl)
    local missing=()
    for p in "${needed[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            echo "error: the Swift toolchain (6.1 or later) is not on PATH; install it from swift.org" >&2
            exit 1
        fi
    fi
}

# Installs the Python packages the checks use (schema validation, deployment checks), when missing.
nercc_install_python_tools() {
    if ! python3 -c "import jsonschema, yaml, numpy" >/dev/null 2>&1; then
        echo "==> installing Python packages: jsonschema PyYAML numpy"
        python3 -m pip install --quiet jsonschema PyYAML numpy
    fi
}
