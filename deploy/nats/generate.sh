#!/bin/sh
# Writes the nats-server configurations of an external bus that trusts this
# installation's keys (operator mode, `full` resolver): one file per node of
# a cluster, and optionally one per leaf node at a remote site with the
# credentials its connections to the hub use. Run it where the control
# plane's data directory is; copy each file to its server (deploy/README.md).
#
#   generate.sh [--data-dir DIR] [--out DIR] [--leaf NAME]... NAME=HOST...
#
# Every node listens for clients on 4222, routes on 6222, leaf nodes on
# 7422 and monitoring on 127.0.0.1:8222; a leaf listens for its local
# agents on 4222 and connects to every node's 7422. Other ports: run
# `restic-manager authority nats-config` yourself (this script's commands).
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
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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
for node in "$@"; do
    name=${node%%=*}
    "$RM" authority nats-config --data-dir "$DATA" \
        --resolver-dir /var/lib/nats/jwt \
        --server-name "$name" --listen 0.0.0.0:4222 --http 127.0.0.1:8222 \
        --cluster restic-manager --cluster-listen 0.0.0.0:6222 --route "$routes" \
        --leafnodes-listen 0.0.0.0:7422 >"$OUT/$name.conf"
    echo "wrote $OUT/$name.conf"
done

for leaf in $LEAVES; do
    "$RM" authority creds --data-dir "$DATA" --role leafnode --out "$OUT/$leaf-leafnode.creds"
    "$RM" authority creds --data-dir "$DATA" --role system --out "$OUT/$leaf-system.creds"
    "$RM" authority nats-config --data-dir "$DATA" \
        --resolver-dir /var/lib/nats/jwt \
        --server-name "$leaf" --listen 0.0.0.0:4222 --http 127.0.0.1:8222 \
        --leaf-remote "$hubs" \
        --leaf-creds "/etc/nats/$leaf-leafnode.creds" \
        --leaf-system-creds "/etc/nats/$leaf-system.creds" >"$OUT/$leaf.conf"
    echo "wrote $OUT/$leaf.conf (copy $leaf-*.creds to /etc/nats/ on it)"
done
