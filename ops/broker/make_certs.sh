#!/usr/bin/env bash
# Create the TLS files of the private RabbitMQ node of nercc (development / tests only).
#
#   ops/broker/make_certs.sh [--force] [DIR]
#
# DIR defaults to <state>/tls of the node selected by ops/broker/env.sh
# (NERCC_BROKER_DIR). It receives a throwaway CA (ca.pem; its key is deleted
# right after signing), a server certificate for localhost (server.pem /
# server.key, SAN DNS:localhost and IP:127.0.0.1) and a client certificate for
# mutual TLS (client.pem / client.key, CN nercc-test-client). RSA 2048, SHA-256,
# valid 365 days. Idempotent: the files are kept while they are complete,
# consistent and valid for at least one more day; otherwise (or with --force)
# all of them are created anew. Needs only openssl.
#
# Run as root, the files are given to the owner of the state directory (the
# rabbitmq user once ops/broker/start.sh has run), so the node can read
# server.key. Keys are mode 600, certificates 644.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
DAYS=365

log() { printf 'broker: %s\n' "$*" >&2; }
die() {
    printf 'broker: ERROR: %s\n' "$*" >&2
    exit 1
}

FORCE="" DIR=""
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h | --help)
            sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*) die "unknown option: $arg (see --help)" ;;
        *)
            [ -z "$DIR" ] || die "only one directory may be given (see --help)"
            DIR="$arg"
            ;;
    esac
done
if [ -z "$DIR" ]; then
    # shellcheck source=ops/broker/env.sh
    . "$SCRIPT_DIR/env.sh"
    DIR="$NERCC_BROKER_TLS_DIR"
fi
case "$DIR" in
    /*) ;;
    *) DIR="$PWD/$DIR" ;;
esac
command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install -y openssl)"

FILES=(ca.pem server.pem server.key client.pem client.key)

# Same public key in certificate $1 and private key $2?
key_matches() {
    [ "$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null)" = "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ] &&
        [ -n "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ]
}

# Are the files in $1 complete, consistent and valid for at least one more day?
current() {
    local d="$1" f
    for f in "${FILES[@]}"; do [ -s "$d/$f" ] || return 1; done
    for f in ca.pem server.pem client.pem; do
        openssl x509 -in "$d/$f" -noout -checkend 86400 >/dev/null 2>&1 || return 1
    done
    openssl verify -CAfile "$d/ca.pem" -purpose sslserver -verify_hostname localhost -verify_ip 127.0.0.1 \
        "$d/server.pem" >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$d/ca.pem" -purpose sslclient "$d/client.pem" >/dev/null 2>&1 || return 1
    key_matches "$d/server.pem" "$d/server.key" && key_matches "$d/client.pem" "$d/client.key"
}

mkdir -p "$DIR" || die "cannot create $DIR"
if [ -z "$FORCE" ] && current "$DIR"; then
    log "TLS certificates in $DIR are current (valid until $(openssl x509 -in "$DIR/server.pem" -noout -enddate | cut -d= -f2))"
    exit 0
fi

# Generate everything in a scratch directory next to the final files, check
# the result, then move it into place.
TMP="$(mktemp -d "$DIR/.new.XXXXXX")"
trap 'rm -rf -- "$TMP"' EXIT
(
    cd "$TMP"
    umask 077
    run() { # command... -> its output only when it fails
        local out
        out="$("$@" 2>&1)" || {
            printf '%s\n' "$out" >&2
            return 1
        }
    }
    cat >ext.cnf <<'CNF'
[req]
distinguished_name = req_dn
[req_dn]

[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    run openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" \
        -subj "/O=nercc/CN=nercc development CA $(date -u +%Y%m%dT%H%M%SZ)" \
        -config ext.cnf -extensions ca -keyout ca.key -out ca.pem || exit 1
    for name in server client; do
        case "$name" in
            server) subject="/O=nercc/CN=localhost" ;;
            client) subject="/O=nercc/CN=nercc-test-client" ;;
        esac
        run openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "$subject" -config ext.cnf \
            -keyout "$name.key" -out "$name.csr" || exit 1
        run openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial ca.srl \
            -days "$DAYS" -sha256 -extfile ext.cnf -extensions "$name" -out "$name.pem" || exit 1
    done
    rm -f ca.key ca.srl ./*.csr ext.cnf
) || die "openssl failed to create the certificates (see above)"
current "$TMP" || die "the new certificates in $TMP do not verify; this is a bug in $0"

chmod 644 "$TMP/ca.pem" "$TMP/server.pem" "$TMP/client.pem"
chmod 600 "$TMP/server.key" "$TMP/client.key"
chmod 755 "$DIR"
if [ "$(id -u)" -eq 0 ]; then
    # Give the files to the owner of the state directory (the node's user).
    owner="$(stat -c '%u:%g' "$(dirname "$DIR")")"
    chown "$owner" "$DIR" "$TMP"/*
fi
for f in "${FILES[@]}"; do mv -f "$TMP/$f" "$DIR/$f"; done
rm -f "$DIR/ca.key" "$DIR/ca.srl" # left by older versions of this script
log "created TLS certificates in $DIR (CA, server localhost/127.0.0.1, client; valid until $(openssl x509 -in "$DIR/server.pem" -noout -enddate | cut -d= -f2))"
