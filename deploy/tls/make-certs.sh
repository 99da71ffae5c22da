#!/usr/bin/env bash
# Make a private CA and scheduler/worker/client certificates for a TLS Dask cluster.
#
#   deploy/tls/make-certs.sh [DIR] [HOSTNAME ...]
#
# DIR (default ./dask-tls) receives ca.pem, ca-key.pem and {scheduler,worker,client}.pem
# with their -key.pem files. Every certificate is signed by the CA, allows both serverAuth
# and clientAuth (Dask's TLS is mutual) and names localhost, 127.0.0.1, ::1 and each extra
# HOSTNAME (DNS name or IP address; also taken from $DASK_TLS_HOSTNAMES, space-separated)
# in its subjectAltName. Idempotent: existing files that still verify against the CA are
# kept; FORCE=1 makes everything anew. DAYS (default 365) sets the validity.
# Prints the [cluster.tls] table to paste into a job file.
set -euo pipefail

DIR="${1:-dask-tls}"
[ "$#" -gt 0 ] && shift
HOSTS=("localhost" "127.0.0.1" "::1" "$@")
# shellcheck disable=SC2206
[ -n "${DASK_TLS_HOSTNAMES:-}" ] && HOSTS+=(${DASK_TLS_HOSTNAMES})
DAYS="${DAYS:-365}"
command -v openssl >/dev/null || { echo "make-certs.sh: openssl not found (apt-get install openssl)" >&2; exit 2; }

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
umask 077

if [ "${FORCE:-0}" = "1" ]; then
  rm -f "$DIR"/{ca,scheduler,worker,client}{,-key}.pem "$DIR"/.san-*
fi

san=""
for h in "${HOSTS[@]}"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then entry="IP:$h"; else entry="DNS:$h"; fi
  case ",$san," in *",$entry,"*) ;; *) san="${san:+$san,}$entry" ;; esac
done

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/ca-key.pem" ]; then
  rm -f "$DIR"/{scheduler,worker,client}{,-key}.pem  # a new CA invalidates old leaves
  newkey "$DIR/ca-key.pem"
  openssl req -x509 -new -key "$DIR/ca-key.pem" -sha256 -days "$DAYS" -subj "/CN=ntkscale-dask-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/ca.pem"
  echo "make-certs.sh: new CA $DIR/ca.pem" >&2
fi

ext="$(mktemp "$DIR/.ext.XXXXXX")"
csr="$(mktemp "$DIR/.csr.XXXXXX")"
trap 'rm -f "$ext" "$csr"' EXIT
cat >"$ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EXT

for role in scheduler worker client; do
  cert="$DIR/$role.pem" key="$DIR/$role-key.pem"
  if [ -s "$cert" ] && [ -s "$key" ] && [ "$(cat "$DIR/.san-$role" 2>/dev/null)" = "$san" ] \
     && openssl verify -CAfile "$DIR/ca.pem" "$cert" >/dev/null 2>&1 \
     && openssl x509 -in "$cert" -noout -checkend 86400 >/dev/null; then
    continue  # present, signed by this CA, naming the same hosts, valid for another day
  fi
  newkey "$key"
  openssl req -new -key "$key" -subj "/CN=ntkscale-dask-$role" -out "$csr"
  openssl x509 -req -in "$csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$ext" -out "$cert" 2>/dev/null
  printf '%s' "$san" >"$DIR/.san-$role"
  echo "make-certs.sh: new $role certificate $cert ($san)" >&2
done
rm -f "$DIR/ca.srl"
chmod 600 "$DIR"/*-key.pem
chmod 644 "$DIR"/ca.pem "$DIR"/{scheduler,worker,client}.pem

cat <<TOML
[cluster.tls]
ca_file = "$DIR/ca.pem"
cert_file = "$DIR/client.pem"
key_file = "$DIR/client-key.pem"
scheduler_cert_file = "$DIR/scheduler.pem"
scheduler_key_file = "$DIR/scheduler-key.pem"
worker_cert_file = "$DIR/worker.pem"
worker_key_file = "$DIR/worker-key.pem"
require_encryption = true
TOML
