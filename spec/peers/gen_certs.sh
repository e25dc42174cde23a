#!/bin/sh
# Generates throw-away test certificates (EC P-256, quick to make):
#   sh gen_certs.sh DIR
#   DIR/ca.pem ca.key            the test root CA
#   DIR/server.pem server.key    127.0.0.1 + localhost, issued by an
#                                intermediate CA: server.pem is the chain
#   DIR/expired.pem expired.key  127.0.0.1, expired yesterday
#   DIR/wronghost.pem .key       valid, but for other.example only
#   DIR/self.pem self.key        127.0.0.1, self-signed
#   DIR/client.pem client.key    a client certificate (CN=wsuv-client)
#   DIR/other-ca.pem             an unrelated CA (the "wrong CA")
#   DIR/server2.pem server2.key  a second server certificate (CN=reloaded)
set -eu
d=${1:?usage: gen_certs.sh DIR}
mkdir -p "$d"
cd "$d"
# req ARGS...: openssl req making a new unencrypted P-256 key.
req() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@" 2>/dev/null
}

ca() { # ca NAME CN
  req -x509 -days 30 -subj "/CN=$2" -keyout "$1.key" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign
}
# leaf NAME CN ISSUER DAYS EXT
leaf() {
  req -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
  printf '%s\nbasicConstraints=CA:FALSE\n' "$5" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
    -days "$4" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
local_san='subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost'

ca ca wsuv-test-ca
ca other-ca wsuv-other-ca
# Intermediate CA, signed by the root.
req -subj /CN=wsuv-test-intermediate -keyout inter.key -out inter.csr
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n' >inter.ext
openssl x509 -req -in inter.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
  -extfile inter.ext -out inter.pem 2>/dev/null
rm -f inter.csr inter.ext

leaf server 127.0.0.1 inter 30 "$local_san"
cat inter.pem >>server.pem # the chain: leaf first, then the intermediate
leaf server2 reloaded inter 30 "$local_san"
cat inter.pem >>server2.pem
leaf expired 127.0.0.1 ca -1 "$local_san"
leaf wronghost other.example ca 30 'subjectAltName=DNS:other.example'
leaf client wsuv-client ca 30 'extendedKeyUsage=clientAuth'
req -x509 -days 30 -subj /CN=127.0.0.1 -addext "$local_san" -keyout self.key -out self.pem
rm -f ./*.srl
