#!/usr/bin/env bash
# Generates a throwaway CA, a server certificate for localhost (SAN DNS:localhost, IP:127.0.0.1)
# and a client certificate (for mutual TLS) under DIR, once: existing files that are still valid
# for a day are kept. Development and tests only.
#
#   ops/broker/make_certs.sh DIR
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
valid() { [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1; }
if valid ca.pem && valid server.pem && valid client.pem && [ -s server.key ] && [ -s client.key ]; then
    exit 0
fi
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=nercc development CA" \
    -keyout ca.key -out ca.pem >/dev/null 2>&1
sign() { # name subject extensions
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" >/dev/null 2>&1
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -sha256 \
        -extfile "$1.ext" -out "$1.pem" >/dev/null 2>&1
    rm -f "$1.csr" "$1.ext"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
sign client "/CN=nercc-test-client" "extendedKeyUsage=clientAuth"
chmod 644 ca.pem server.pem client.pem
chmod 640 server.key
chmod 600 client.key ca.key
