#!/bin/sh
# Installs restic-manager-agent on a Linux endpoint and enrolls it.
#
#   curl -fsSk https://SERVER/... is NOT how to get this script: copy it from
#   the server's deploy/ directory (or the package's /usr/share/restic-manager)
#   and run, as root:
#
#   sh install-agent.sh --server https://backup.example.net:8443 \
#       --token TOKEN --fingerprint sha256:HEX [--name NAME] \
#       [--prefix /usr/local] [--state-dir /var/lib/restic-manager-agent] \
#       [--no-service]
#
# (the web UI's "add host" page and `restic-manager admin host-add` print
# the token and fingerprint). Steps:
#  1. fetches the web service's certificate chain and refuses to go on
#     unless the fingerprint given is the SHA-256 of the installation's CA
#     in it (which must have issued the certificate, for this host) or of
#     the certificate itself (an operator-provided one) -- the same pin the
#     agent uses;
#  2. downloads restic-manager-agent-linux-<arch> and its .sha256 over a
#     connection pinned to that certificate's key, and checks the hash;
#  3. installs it as PREFIX/bin/restic-manager-agent (and restic with apt
#     when it is missing);
#  4. enrolls (`restic-manager-agent enroll`), then installs and starts the
#     systemd service (`restic-manager-agent install`) unless --no-service.
# Needs: sh, curl, openssl, sha256sum.
set -eu

SERVER="" TOKEN="" FINGERPRINT="" NAME="" PREFIX=/usr/local
STATE_DIR=/var/lib/restic-manager-agent SERVICE=1
die() { echo "install-agent: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --server) SERVER=${2:-}; shift ;;
    --token) TOKEN=${2:-}; shift ;;
    --fingerprint) FINGERPRINT=${2:-}; shift ;;
    --name) NAME=${2:-}; shift ;;
    --prefix) PREFIX=${2:-}; shift ;;
    --state-dir) STATE_DIR=${2:-}; shift ;;
    --no-service) SERVICE=0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
[ -n "$SERVER" ] || die "--server is required (https://host:port)"
[ -n "$TOKEN" ] || die "--token is required"
[ -n "$FINGERPRINT" ] || die "--fingerprint is required (sha256:...)"
case "$SERVER" in https://*) ;; *) die "--server must be an https:// URL, got $SERVER" ;; esac
for tool in curl openssl sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install curl openssl coreutils)"
done

SERVER=${SERVER%/}
hostport=${SERVER#https://}
hostport=${hostport%%/*}
case "$hostport" in
  \[*\]:*|*:*) ;;
  *) hostport="$hostport:443" ;;
esac
host=${hostport%:*}
host=${host#[}; host=${host%]}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. the certificate chain, checked against the fingerprint
openssl s_client -connect "$hostport" -servername "$host" -showcerts </dev/null 2>/dev/null \
  | awk -v dir="$TMP" '/-----BEGIN CERTIFICATE-----/{n++; f=dir "/chain-" n ".pem"; on=1} on{print > f} /-----END CERTIFICATE-----/{on=0; close(f)}'
[ -s "$TMP/chain-1.pem" ] || die "could not fetch the certificate of $hostport"
cp "$TMP/chain-1.pem" "$TMP/cert.pem"
want=$(printf '%s' "${FINGERPRINT#sha256:}" | tr -d ':' | tr 'A-F' 'a-f')
sha_of() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
got=$(sha_of "$TMP/cert.pem")
if [ "$got" != "$want" ]; then
  ca=""
  for c in "$TMP"/chain-*.pem; do
    [ "$(sha_of "$c")" = "$want" ] && ca=$c
  done
  [ -n "$ca" ] || die "neither the server's certificate (sha256:$got) nor a CA it sent has the expected fingerprint $FINGERPRINT: refusing to continue"
  case "$host" in
    *[!0-9.:a-fA-F]*) name_check="-verify_hostname $host" ;;
    *) name_check="-verify_ip $host" ;;
  esac
  # shellcheck disable=SC2086
  openssl verify -no-CApath -CAfile "$ca" $name_check "$TMP/cert.pem" >/dev/null 2>&1 \
    || die "the server's certificate is not issued for $host by the CA with fingerprint $FINGERPRINT: refusing to continue"
fi
pin=$(openssl x509 -in "$TMP/cert.pem" -pubkey -noout | openssl pkey -pubin -outform DER \
  | openssl dgst -sha256 -binary | openssl base64 -A)
fetch() { curl -fsS --proto '=https' -k --pinnedpubkey "sha256//$pin" -o "$2" "$SERVER$1"; }

# 2. the binary and its hash
case "$(uname -m)" in
  x86_64|amd64) arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 ;;
  *) arch=$(uname -m) ;;
esac
file="restic-manager-agent-linux-$arch"
fetch "/download/agent/$file" "$TMP/agent" || die "downloading $file from $SERVER failed"
fetch "/download/agent/$file.sha256" "$TMP/agent.sha256" || die "downloading $file.sha256 failed"
want_sum=$(cut -d' ' -f1 "$TMP/agent.sha256")
got_sum=$(sha256sum "$TMP/agent" | cut -d' ' -f1)
[ -n "$want_sum" ] && [ "$got_sum" = "$want_sum" ] || die "$file has SHA-256 $got_sum, the server says $want_sum: refusing to install it"
echo "install-agent: $file verified (sha256 $got_sum)"

# 3. install
mkdir -p "$PREFIX/bin"
AGENT="$PREFIX/bin/restic-manager-agent"
install -m 0755 "$TMP/agent" "$AGENT.new" && mv -f "$AGENT.new" "$AGENT"
if ! command -v restic >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "install-agent: installing restic (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends restic >/dev/null
  else
    echo "install-agent: warning: restic is not installed; the agent needs it" >&2
  fi
fi

# 4. enroll, then the service
set -- --state-dir "$STATE_DIR" enroll --server "$SERVER" --token "$TOKEN" --fingerprint "$FINGERPRINT"
[ -z "$NAME" ] || set -- "$@" --hostname "$NAME"
"$AGENT" "$@"
if [ "$SERVICE" = 1 ]; then
  "$AGENT" --state-dir "$STATE_DIR" install
fi
echo "install-agent: done ($AGENT, state in $STATE_DIR)"
