#!/bin/sh
# Generate a throw-away test CA and a server certificate for 127.0.0.1/localhost.
#   sh gen_certs.sh DIR   -> DIR/ca.pem DIR/server.pem DIR/server.key
set -eu
d=${1:?usage: gen_certs.sh DIR}
mkdir -p "$d"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=wsuv-test-ca \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$d/ext.cnf"
openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -days 30 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
rm -f "$d/server.csr" "$d/ext.cnf" "$d/ca.srl"
