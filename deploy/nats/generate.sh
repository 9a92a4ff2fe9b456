#!/bin/sh
# Writes the nats-server configurations of an external bus that trusts this
# installation's keys (operator mode, `full` resolver): one file per node of
# a cluster, and optionally one per leaf node at a remote site with the
# credentials its connections to the hub use. Every server gets a
# certificate from the installation's CA: clients are served over TLS, and
# routes and leaf connections are mutual TLS (each end must hold a
# certificate from that CA). Run it where the control plane's data
# directory is; copy each server's files to its /etc/nats/ (deploy/README.md).
#
#   generate.sh [--data-dir DIR] [--out DIR] [--leaf NAME[=HOST]]... NAME=HOST...
#
# Every node listens for clients on 4222, routes on 6222, leaf nodes on
# 7422 and monitoring on 127.0.0.1:8222; a leaf listens for its local
# agents on 4222 and connects to every node's 7422. Other ports: run
# `restic-manager authority nats-config` yourself (this script's commands).
# Re-running keeps certificates that are not yet in the last third of
# their life (`authority bus-cert --renew-if-expiring`).
set -eu

DATA=/var/lib/restic-manager
OUT=.
RM=${RM:-restic-manager}
LEAVES=
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --leaf) LEAVES="$LEAVES $2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { echo "name at least one node: NAME=HOST" >&2; exit 2; }

routes=
hubs=
for node in "$@"; do
    host=${node#*=}
    routes="$routes${routes:+,}nats://$host:6222"
    hubs="$hubs${hubs:+,}nats-leaf://$host:7422"
done

mkdir -p "$OUT"
# cert NAME HOST: NAME-cert.pem / NAME-key.pem for HOST (and NAME), and
# ca.pem: the installation's CA (created if missing), which every server
# verifies its peers with and clients verify the servers with.
cert() {
    "$RM" authority bus-cert --data-dir "$DATA" --renew-if-expiring \
        --name "$2,$1" --cert-out "$OUT/$1-cert.pem" --key-out "$OUT/$1-key.pem" \
        --ca-out "$OUT/ca.pem"
}

tls() {
    echo --tls-cert "/etc/nats/$1-cert.pem" --tls-key "/etc/nats/$1-key.pem" \
        --tls-ca /etc/nats/ca.pem
}

for node in "$@"; do
    name=${node%%=*}
    host=${node#*=}
    cert "$name" "$host"
    # shellcheck disable=SC2046 # tls prints separate words
    "$RM" authority nats-config --data-dir "$DATA" \
        --resolver-dir /var/lib/nats/jwt \
        --server-name "$name" --listen 0.0.0.0:4222 --http 127.0.0.1:8222 \
        --cluster restic-manager --cluster-listen 0.0.0.0:6222 --route "$routes" \
        --leafnodes-listen 0.0.0.0:7422 $(tls "$name") >"$OUT/$name.conf"
    echo "wrote $OUT/$name.conf (copy it, ca.pem and $name-*.pem to /etc/nats/ on $host)"
done

for leaf in $LEAVES; do
    host=${leaf#*=}
    leaf=${leaf%%=*}
    cert "$leaf" "$host"
    "$RM" authority creds --data-dir "$DATA" --role leafnode --out "$OUT/$leaf-leafnode.creds"
    "$RM" authority creds --data-dir "$DATA" --role system --out "$OUT/$leaf-system.creds"
    # shellcheck disable=SC2046
    "$RM" authority nats-config --data-dir "$DATA" \
        --resolver-dir /var/lib/nats/jwt \
        --server-name "$leaf" --listen 0.0.0.0:4222 --http 127.0.0.1:8222 \
        --leaf-remote "$hubs" \
        --leaf-creds "/etc/nats/$leaf-leafnode.creds" \
        --leaf-system-creds "/etc/nats/$leaf-system.creds" $(tls "$leaf") >"$OUT/$leaf.conf"
    echo "wrote $OUT/$leaf.conf (copy it, ca.pem, $leaf-*.pem and $leaf-*.creds to /etc/nats/ on it)"
done
