#!/usr/bin/env bash
# Makes the fixed test PKI of the direct_open fuzz target (run once; the outputs are committed):
# a CA, alice@sender.example (signer) and bob@recipient.example (recipient), RSA 2048,
# SHA-256, valid for 100 years from the day they were made (2026-11-27). Needs the openssl CLI (3.x).
set -euo pipefail
cd "$(dirname "$0")"
ext=$(mktemp)
trap 'rm -f "$ext" ./*.csr ./*.srl' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -keyout ca.key -out ca.pem -days 36500 \
    -subj "/CN=Fuzz Test CA/O=Switchboard Fuzz" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
for who in alice@sender.example bob@recipient.example; do
    name=${who%@*}
    cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=emailProtection
subjectAltName=email:$who
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
        -subj "/CN=$who/O=Switchboard Fuzz" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -sha256 \
        -extfile "$ext" -out "$name.pem" 2>/dev/null
done
rm -f ca.key
