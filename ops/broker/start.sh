#!/usr/bin/env bash
# Start the private RabbitMQ node of nercc (development / tests).
#
#   ops/broker/start.sh            start (or report) the node, print its URLs
#
# Settings come from ops/broker/env.sh (NERCC_BROKER_DIR, NERCC_NODENAME,
# NERCC_AMQP_PORT, NERCC_MGMT_PORT, NERCC_PROMETHEUS_PORT, NERCC_DIST_PORT,
# NERCC_BROKER_TLS, NERCC_AMQPS_PORT) plus NERCC_BROKER_START_TIMEOUT
# (seconds, default 60) and NERCC_BROKER_COOKIE_SOURCE (a file holding the
# Erlang cookie to use instead of the state directory's own random one, e.g.
# one shared by the nodes of a cluster). See README.md. TLS (AMQPS) is on
# unless NERCC_BROKER_TLS=0; the certificates come from ops/broker/make_certs.sh.
#
# Idempotent: when the node already answers, its URLs are printed and the
# script exits 0. Progress goes to stderr, the URL summary to stdout.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
NODE_USER_DEFAULT="rabbitmq" # used when started as root
START_TIMEOUT="${NERCC_BROKER_START_TIMEOUT:-60}"

log() { printf 'broker: %s\n' "$*" >&2; }
die() {
    printf 'broker: ERROR: %s\n' "$*" >&2
    exit 1
}

case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

# ------------------------------------------------------------ installation

ensure_rabbitmq_installed() {
    if [ -x "$RABBITMQ_BIN/rabbitmq-server" ] && [ -x "$RABBITMQ_BIN/rabbitmqctl" ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] ||
        die "rabbitmq-server is not installed; run this script as root (it installs it) or: sudo apt-get install -y rabbitmq-server"
    command -v apt-get >/dev/null || die "rabbitmq-server is not installed and apt-get is not available"

    log "rabbitmq-server is not installed: installing it with apt-get"
    # Keep the package's own system service from starting: policy-rc.d
    # answering 101 ("action forbidden") is honoured by invoke-rc.d and
    # deb-systemd-invoke. Only a policy we created ourselves is removed again.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, created by nercc ops/broker/start.sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update </dev/null || die "apt-get update failed"
    apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        rabbitmq-server </dev/null || die "apt-get install rabbitmq-server failed"
    if [ -n "$created_policy" ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    [ -x "$RABBITMQ_BIN/rabbitmq-server" ] || die "rabbitmq-server is still missing after apt-get install"
}

ensure_rabbitmq_installed

# shellcheck source=ops/broker/env.sh
. "$SCRIPT_DIR/env.sh"

# ------------------------------------------------------------ validation

check_port() { # name value
    case "$2" in
        '' | *[!0-9]*) die "$1 must be a TCP port number, got '$2'" ;;
    esac
    if [ "$((10#$2))" -lt 1 ] || [ "$((10#$2))" -gt 65535 ]; then
        die "$1 must be between 1 and 65535, got '$2'"
    fi
}
check_port NERCC_AMQP_PORT "$NERCC_AMQP_PORT"
check_port NERCC_MGMT_PORT "$NERCC_MGMT_PORT"
check_port NERCC_PROMETHEUS_PORT "$NERCC_PROMETHEUS_PORT"
check_port NERCC_DIST_PORT "$NERCC_DIST_PORT"
PORTS=("$NERCC_AMQP_PORT" "$NERCC_MGMT_PORT" "$NERCC_PROMETHEUS_PORT" "$NERCC_DIST_PORT")
if [ "$NERCC_BROKER_TLS" = 1 ]; then
    check_port NERCC_AMQPS_PORT "$NERCC_AMQPS_PORT"
    PORTS+=("$NERCC_AMQPS_PORT")
fi
if [ "$(printf '%s\n' "${PORTS[@]}" | sed 's/^0*//' | sort -u | wc -l)" -ne "${#PORTS[@]}" ]; then
    die "the AMQP, management, Prometheus, distribution$([ "$NERCC_BROKER_TLS" = 1 ] && echo ' and AMQPS') ports must all differ (${PORTS[*]})"
fi
for p in "${PORTS[@]}"; do
    [ "$((10#$p))" != 4369 ] || die "no NERCC_*_PORT may be 4369 (epmd)"
done

[[ "$NERCC_NODENAME" =~ ^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$ ]] ||
    die "invalid node name '$NERCC_NODENAME' (expected name@host, e.g. nercc@localhost)"
NODE_SHORT="${NERCC_NODENAME%%@*}"

case "$NERCC_BROKER_DIR" in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /proc | /root | /run | /sbin | /srv | /sys | /tmp | /usr | /var | /var/tmp)
        die "refusing to use NERCC_BROKER_DIR=$NERCC_BROKER_DIR; choose a dedicated directory"
        ;;
esac
[[ "$NERCC_BROKER_DIR" =~ ^[A-Za-z0-9_./@+-]+$ ]] ||
    die "NERCC_BROKER_DIR must not contain spaces or special characters (the RabbitMQ scripts split on them): $NERCC_BROKER_DIR"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "NERCC_BROKER_START_TIMEOUT must be a number of seconds"

# ------------------------------------------------------------ helpers

if [ "$(id -u)" -eq 0 ]; then
    NODE_USER="$NODE_USER_DEFAULT"
    id -u "$NODE_USER" >/dev/null 2>&1 || die "user '$NODE_USER' does not exist (it comes with the rabbitmq-server package)"
    NODE_GROUP="$(id -gn "$NODE_USER")"
    AS_NODE_USER=(setpriv "--reuid=$NODE_USER" "--regid=$NODE_GROUP" --init-groups)
else
    NODE_USER="$(id -un)"
    NODE_GROUP="$(id -gn)"
    AS_NODE_USER=()
fi

# CLI tools: stdin closed (CI), quiet, bounded in time.
ctl() { timeout 90 rabbitmqctl -q -n "$NERCC_NODENAME" "$@" </dev/null; }
diag() { timeout 90 rabbitmq-diagnostics -q -n "$NERCC_NODENAME" "$@" </dev/null; }

node_responds() { diag ping -t 5 >/dev/null 2>&1; }

# Is our short node name registered with epmd (by any process)?
epmd_has_name() { epmd -names 2>/dev/null | grep -q "^name $NODE_SHORT at port "; }

port_in_use() { # port -> 0 when something listens on it (any address)
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

port_owner() { # port -> a line describing the listener, when available
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "( sport = :$1 )" 2>/dev/null | head -n 3 | sed 's/^/      /'
    fi
}

show_logs() {
    local section
    # Console output of the last start attempt: its first lines carry the
    # reason when the configuration is rejected (the node log does not exist yet).
    if [ -s "$NERCC_BROKER_STARTUP_LOG" ]; then
        section="$(awk '/^===== .* start of /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$NERCC_BROKER_STARTUP_LOG")"
        printf '\n----- %s (last start, first 30 lines) -----\n' "$NERCC_BROKER_STARTUP_LOG" >&2
        printf '%s' "$section" | grep -v '^[[:space:]]*$' | head -n 30 >&2 || true
    fi
    if [ -s "$NERCC_BROKER_LOG_FILE" ]; then
        printf '\n----- %s (last 30 lines) -----\n' "$NERCC_BROKER_LOG_FILE" >&2
        tail -n 30 "$NERCC_BROKER_LOG_FILE" >&2 || true
    fi
    printf -- '-----\n' >&2
}

amqps_summary() { # tls amqps-port -> the AMQPS line of the summary
    if [ "$1" = 1 ]; then
        echo "amqps://guest:guest@localhost:$2/   (CA: $NERCC_BROKER_TLS_DIR/ca.pem)"
    else
        echo "off (NERCC_BROKER_TLS=0)"
    fi
}

print_summary() { # node amqp mgmt prometheus amqps-line
    cat <<EOF
RabbitMQ node $1 is running (state: $NERCC_BROKER_DIR)
  AMQP:        amqp://guest:guest@127.0.0.1:$2/
  AMQPS:       $5
  Management:  http://127.0.0.1:$3/   (user guest, password guest)
  Prometheus:  http://127.0.0.1:$4/metrics
  Log:         $RABBITMQ_LOG_BASE/$1.log
  CLI:         . ops/broker/env.sh && rabbitmqctl -n $1 status
EOF
}

# Settings recorded by the start that launched the running node.
RECORD_FILE="$NERCC_BROKER_DIR/broker.env"
write_record() {
    {
        echo "# written by ops/broker/start.sh when the node was started"
        echo "NERCC_NODENAME=$NERCC_NODENAME"
        echo "NERCC_AMQP_PORT=$NERCC_AMQP_PORT"
        echo "NERCC_MGMT_PORT=$NERCC_MGMT_PORT"
        echo "NERCC_PROMETHEUS_PORT=$NERCC_PROMETHEUS_PORT"
        echo "NERCC_DIST_PORT=$NERCC_DIST_PORT"
        echo "NERCC_BROKER_TLS=$NERCC_BROKER_TLS"
        echo "NERCC_AMQPS_PORT=$NERCC_AMQPS_PORT"
    } >"$RECORD_FILE.tmp"
    mv -f "$RECORD_FILE.tmp" "$RECORD_FILE"
}

# Print the URLs of a node that was already running. If it was started with
# other ports than the ones requested now, show the real ones and warn.
report_running() {
    local amqp="$NERCC_AMQP_PORT" mgmt="$NERCC_MGMT_PORT" prom="$NERCC_PROMETHEUS_PORT"
    local tls="$NERCC_BROKER_TLS" amqps="$NERCC_AMQPS_PORT" key value
    if [ -r "$RECORD_FILE" ]; then
        # A record without NERCC_BROKER_TLS comes from a start.sh without TLS support.
        tls=0
        while IFS='=' read -r key value; do
            case "$key" in
                NERCC_AMQP_PORT) amqp="$value" ;;
                NERCC_MGMT_PORT) mgmt="$value" ;;
                NERCC_PROMETHEUS_PORT) prom="$value" ;;
                NERCC_BROKER_TLS) tls="$value" ;;
                NERCC_AMQPS_PORT) amqps="$value" ;;
            esac
        done <"$RECORD_FILE"
    fi
    if [ "$amqp/$mgmt/$prom" != "$NERCC_AMQP_PORT/$NERCC_MGMT_PORT/$NERCC_PROMETHEUS_PORT" ]; then
        log "WARNING: the running node uses ports $amqp/$mgmt/$prom (AMQP/management/Prometheus), not the requested $NERCC_AMQP_PORT/$NERCC_MGMT_PORT/$NERCC_PROMETHEUS_PORT; run ops/broker/stop.sh first to change them"
    fi
    if [ "$tls" != "$NERCC_BROKER_TLS" ] || { [ "$tls" = 1 ] && [ "$amqps" != "$NERCC_AMQPS_PORT" ]; }; then
        log "WARNING: the running node has AMQPS $(amqps_summary "$tls" "$amqps" | cut -d' ' -f1), not the requested $(amqps_summary "$NERCC_BROKER_TLS" "$NERCC_AMQPS_PORT" | cut -d' ' -f1); run ops/broker/stop.sh first to change it"
    fi
    print_summary "$NERCC_NODENAME" "$amqp" "$mgmt" "$prom" "$(amqps_summary "$tls" "$amqps")"
}

# ------------------------------------------------------------ state directory

# Refuse to take over a directory that is not ours (start.sh chowns it and
# stop.sh --purge deletes it).
if [ -e "$NERCC_BROKER_DIR" ]; then
    [ -d "$NERCC_BROKER_DIR" ] || die "NERCC_BROKER_DIR=$NERCC_BROKER_DIR exists and is not a directory"
    if [ ! -e "$NERCC_BROKER_MARKER" ] && [ -n "$(ls -A "$NERCC_BROKER_DIR" 2>/dev/null)" ]; then
        die "NERCC_BROKER_DIR=$NERCC_BROKER_DIR is not empty and was not created by ops/broker/start.sh; choose another directory"
    fi
fi
mkdir -p "$NERCC_BROKER_DIR" || die "cannot create $NERCC_BROKER_DIR"
[ -w "$NERCC_BROKER_DIR" ] || die "$NERCC_BROKER_DIR is not writable by $(id -un); run as root or use another NERCC_BROKER_DIR"
echo "nercc broker state directory; safe to delete when the node is stopped (ops/broker/stop.sh --purge)" >"$NERCC_BROKER_MARKER"

# One start at a time per state directory.
exec 9>"$NERCC_BROKER_DIR/.start.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w "$((START_TIMEOUT + 30))" 9 || die "another ops/broker/start.sh holds $NERCC_BROKER_DIR/.start.lock"
fi

# Already running?
EXISTING_PIDS="$(nercc_broker_pids | tr '\n' ' ')"
if [ -n "$EXISTING_PIDS" ] && node_responds; then
    ctl await_startup --timeout "$START_TIMEOUT" >/dev/null 2>&1 || true
    log "node $NERCC_NODENAME is already running (pids: ${EXISTING_PIDS% })"
    report_running
    exit 0
fi
if [ -z "$EXISTING_PIDS" ] && epmd_has_name; then
    die "node name $NERCC_NODENAME is already registered with epmd by another node (epmd -names: $(epmd -names 2>/dev/null | grep "^name $NODE_SHORT " | tr -d '\n')). Stop that node, or choose another NERCC_NODENAME (and ports)"
fi

mkdir -p "$NERCC_BROKER_HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"

# Erlang cookie: generated once per state directory, or copied from
# NERCC_BROKER_COOKIE_SOURCE when that is set (nodes that form a cluster must
# share one cookie; ops/broker/cluster.sh sets it). The node reads it from
# $HOME/.erlang.cookie; the CLI tools read "-setcookie ..." from an erl
# args file (see env.sh), so the cookie is never on a command line.
if [ -n "${NERCC_BROKER_COOKIE_SOURCE:-}" ]; then
    if [ ! -f "$NERCC_BROKER_COOKIE_SOURCE" ] || [ ! -r "$NERCC_BROKER_COOKIE_SOURCE" ]; then
        die "NERCC_BROKER_COOKIE_SOURCE=$NERCC_BROKER_COOKIE_SOURCE is not a readable file"
    fi
    SHARED_COOKIE="$(tr -d '\n' <"$NERCC_BROKER_COOKIE_SOURCE")"
    [[ "$SHARED_COOKIE" =~ ^[A-Za-z0-9]+$ ]] ||
        die "NERCC_BROKER_COOKIE_SOURCE=$NERCC_BROKER_COOKIE_SOURCE must hold one cookie made of letters and digits"
    if [ ! -s "$NERCC_BROKER_COOKIE_FILE" ] || [ "$(tr -d '\n' <"$NERCC_BROKER_COOKIE_FILE")" != "$SHARED_COOKIE" ]; then
        # A booting node keeps the cookie it read at launch: do not swap it underneath.
        [ -z "$EXISTING_PIDS" ] ||
            die "a node process of $NERCC_BROKER_DIR is running with another cookie; stop it (ops/broker/stop.sh) before starting it with NERCC_BROKER_COOKIE_SOURCE"
        [ ! -s "$NERCC_BROKER_COOKIE_FILE" ] ||
            log "replacing the cookie of $NERCC_BROKER_DIR with the one of $NERCC_BROKER_COOKIE_SOURCE"
        (
            umask 077
            printf '%s' "$SHARED_COOKIE" >"$NERCC_BROKER_COOKIE_FILE.tmp"
        )
        mv -f "$NERCC_BROKER_COOKIE_FILE.tmp" "$NERCC_BROKER_COOKIE_FILE"
    fi
    unset SHARED_COOKIE
fi
if [ ! -s "$NERCC_BROKER_COOKIE_FILE" ]; then
    (
        umask 077
        od -An -N24 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$NERCC_BROKER_COOKIE_FILE.tmp"
    )
    mv -f "$NERCC_BROKER_COOKIE_FILE.tmp" "$NERCC_BROKER_COOKIE_FILE"
fi
COOKIE="$(tr -d '\n' <"$NERCC_BROKER_COOKIE_FILE")"
[[ "$COOKIE" =~ ^[A-Za-z0-9]+$ ]] || die "unexpected content in $NERCC_BROKER_COOKIE_FILE; delete it (with the node stopped) to regenerate"
(
    umask 077
    printf -- '-setcookie %s\n' "$COOKIE" >"$NERCC_BROKER_CLI_ARGS_FILE.tmp"
)
mv -f "$NERCC_BROKER_CLI_ARGS_FILE.tmp" "$NERCC_BROKER_CLI_ARGS_FILE"
unset COOKIE

# TLS files (throwaway CA, server and client certificates), created once per
# state directory and renewed when missing, inconsistent or about to expire.
if [ "$NERCC_BROKER_TLS" = 1 ]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed for the AMQPS listener (apt-get install -y openssl), or set NERCC_BROKER_TLS=0"
    "$SCRIPT_DIR/make_certs.sh" "$NERCC_BROKER_TLS_DIR" ||
        die "could not create the TLS certificates in $NERCC_BROKER_TLS_DIR (or set NERCC_BROKER_TLS=0)"
    TLS_SED=(-e 's/^@TLS@ //' -e '/^@NO_TLS@ /d')
else
    TLS_SED=(-e '/^@TLS@ /d' -e 's/^@NO_TLS@ //')
fi

# Effective configuration: the template with the chosen ports and TLS setting.
TEMPLATE="$NERCC_BROKER_TEMPLATE_DIR/rabbitmq.conf"
[ -r "$TEMPLATE" ] || die "missing $TEMPLATE"
[ -r "$NERCC_BROKER_TEMPLATE_DIR/enabled_plugins" ] || die "missing $NERCC_BROKER_TEMPLATE_DIR/enabled_plugins"
sed "${TLS_SED[@]}" \
    -e "s/@AMQP_PORT@/$NERCC_AMQP_PORT/g" \
    -e "s/@MGMT_PORT@/$NERCC_MGMT_PORT/g" \
    -e "s/@PROMETHEUS_PORT@/$NERCC_PROMETHEUS_PORT/g" \
    -e "s/@AMQPS_PORT@/$NERCC_AMQPS_PORT/g" \
    -e "s|@TLS_DIR@|$NERCC_BROKER_TLS_DIR|g" \
    "$TEMPLATE" >"$RABBITMQ_CONFIG_FILE.tmp"
if grep -n '^[^#]*@[A-Z_]*@' "$RABBITMQ_CONFIG_FILE.tmp" >&2; then
    die "unrendered placeholder(s) left in $TEMPLATE (see above)"
fi
{
    echo "# GENERATED by ops/broker/start.sh from ops/rabbitmq/rabbitmq.conf; edits are overwritten."
    cat "$RABBITMQ_CONFIG_FILE.tmp"
} >"$RABBITMQ_CONFIG_FILE"
rm -f "$RABBITMQ_CONFIG_FILE.tmp"
cp -f "$NERCC_BROKER_TEMPLATE_DIR/enabled_plugins" "$RABBITMQ_ENABLED_PLUGINS_FILE"

# Ownership and reachability for the node user.
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$NODE_USER:$NODE_GROUP" "$NERCC_BROKER_DIR"
    # The node user must be able to traverse every parent directory.
    if ! "${AS_NODE_USER[@]}" test -x "$NERCC_BROKER_DIR" -a -w "$NERCC_BROKER_DIR" 2>/dev/null; then
        d="$NERCC_BROKER_DIR"
        parents=()
        while [ "$d" != "/" ]; do
            d="$(dirname "$d")"
            parents=("$d" "${parents[@]}")
        done
        for d in "${parents[@]}"; do
            if ! "${AS_NODE_USER[@]}" test -x "$d" 2>/dev/null; then
                log "granting o+x on $d so that user $NODE_USER can reach $NERCC_BROKER_DIR"
                chmod o+x "$d"
            fi
        done
        "${AS_NODE_USER[@]}" test -x "$NERCC_BROKER_DIR" -a -w "$NERCC_BROKER_DIR" 2>/dev/null ||
            die "user $NODE_USER cannot use $NERCC_BROKER_DIR; set NERCC_BROKER_DIR to a path it can reach (e.g. /var/tmp/nercc-broker)"
    fi
fi

# Refresh the CLI settings now that the cookie args file exists.
# shellcheck source=ops/broker/env.sh
. "$SCRIPT_DIR/env.sh"

# ------------------------------------------------------------ launch

LAUNCHED=""
if [ -n "$EXISTING_PIDS" ]; then
    # A node process of this state directory exists but does not answer
    # yet: it is booting (or stuck). Do not launch a second one.
    log "node process(es) ${EXISTING_PIDS% } of $NERCC_BROKER_DIR already exist(s); waiting for the node to answer"
else
    busy=""
    for spec in "AMQP:NERCC_AMQP_PORT:$NERCC_AMQP_PORT" "management:NERCC_MGMT_PORT:$NERCC_MGMT_PORT" \
        "Prometheus:NERCC_PROMETHEUS_PORT:$NERCC_PROMETHEUS_PORT" "distribution:NERCC_DIST_PORT:$NERCC_DIST_PORT" \
        "AMQPS:NERCC_AMQPS_PORT:$NERCC_AMQPS_PORT"; do
        IFS=: read -r what var port <<<"$spec"
        [ "$what" != AMQPS ] || [ "$NERCC_BROKER_TLS" = 1 ] || continue
        if port_in_use "$port"; then
            busy=1
            log "port $port ($what, $var) is already in use:"
            port_owner "$port" >&2
        fi
    done
    [ -z "$busy" ] || die "cannot start $NERCC_NODENAME: port(s) in use (another broker, e.g. the system rabbitmq-server?). Stop it or choose other ports via the NERCC_*_PORT variables"

    rm -f "$RABBITMQ_PID_FILE"
    printf '\n===== %s start of %s (user %s)\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$NERCC_NODENAME" "$NODE_USER" >>"$NERCC_BROKER_STARTUP_LOG"
    [ "$(id -u)" -ne 0 ] || chown "$NODE_USER:$NODE_GROUP" "$NERCC_BROKER_STARTUP_LOG"
    log "starting $NERCC_NODENAME (state $NERCC_BROKER_DIR, user $NODE_USER)"
    # Detached: own session, stdin closed, output to the startup log, the
    # lock descriptor closed. The marker variable tags every process of the
    # node for stop.sh. The Erlang distribution listens on loopback only.
    (
        cd "$NERCC_BROKER_DIR"
        exec env -u RABBITMQ_CTL_ERL_ARGS -u RABBITMQ_ERLANG_COOKIE \
            "$NERCC_BROKER_INSTANCE_VAR=$NERCC_BROKER_DIR" \
            HOME="$NERCC_BROKER_HOME" \
            LANG=C.UTF-8 LC_ALL=C.UTF-8 \
            ERL_CRASH_DUMP="$RABBITMQ_LOG_BASE/erl_crash.dump" \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} -kernel inet_dist_use_interface {127,0,0,1}" \
            setsid "${AS_NODE_USER[@]}" "$RABBITMQ_BIN/rabbitmq-server"
    ) </dev/null >>"$NERCC_BROKER_STARTUP_LOG" 2>&1 9>&- &
    LAUNCHED=$!
fi

# ------------------------------------------------------------ wait for boot

proc_alive() { # pid -> 0 when the process exists and is not a zombie
    local stat state
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    state="${stat##*) }"
    state="${state%% *}"
    [ "$state" != Z ] && [ "$state" != X ]
}
node_alive() {
    if [ -n "$LAUNCHED" ] && proc_alive "$LAUNCHED"; then return 0; fi
    [ -n "$(nercc_broker_pids)" ]
}

fail_start() {
    log "$1"
    show_logs
    if [ -n "$LAUNCHED" ]; then
        local pids
        pids="$(nercc_broker_pids | tr '\n' ' ')"
        if [ -n "$pids" ]; then
            log "stopping the half-started node (pids ${pids% })"
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            sleep 3
            pids="$(nercc_broker_pids | tr '\n' ' ')"
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
    fi
    die "RabbitMQ node $NERCC_NODENAME did not start; see the log lines above, $RABBITMQ_LOG_BASE/ and ops/broker/README.md (troubleshooting)"
}

t0=$SECONDS
deadline=$((SECONDS + START_TIMEOUT))
# 1. until the node has registered with epmd (cheap to poll) ...
until epmd_has_name; do
    node_alive || fail_start "the node process exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || fail_start "timed out after ${START_TIMEOUT}s waiting for the node to register with epmd"
    sleep 0.5
done
# 2. ... then until the rabbit application and its plugins have booted.
until ctl await_startup --timeout "$((deadline - SECONDS > 5 ? deadline - SECONDS : 5))" >/dev/null 2>&1; do
    node_alive || fail_start "the node process exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || fail_start "timed out after ${START_TIMEOUT}s waiting for the node to boot (rabbitmqctl await_startup)"
    sleep 1
done

[ -z "$LAUNCHED" ] || write_record
log "node $NERCC_NODENAME booted in $((SECONDS - t0))s"

# AMQPS: a TLS handshake that verifies the certificate chain and the name
# "localhost" against the CA. A failure is reported, but the node is left
# running (plain AMQP works; see README.md, TLS).
if [ -n "$LAUNCHED" ] && [ "$NERCC_BROKER_TLS" = 1 ]; then
    if tls_out="$(timeout 20 openssl s_client -connect "127.0.0.1:$NERCC_AMQPS_PORT" -servername localhost \
        -verify_hostname localhost -verify_return_error -CAfile "$NERCC_AMQPS_CA_FILE" -brief \
        </dev/null 2>&1)" && printf '%s\n' "$tls_out" | grep -q '^Verification: OK'; then
        log "AMQPS listener on 127.0.0.1:$NERCC_AMQPS_PORT verified ($(printf '%s\n' "$tls_out" |
            sed -n 's/^Protocol version: //p' | head -n 1), certificate for localhost)"
    else
        log "WARNING: the TLS handshake with 127.0.0.1:$NERCC_AMQPS_PORT failed or did not verify:"
        printf '%s\n' "$tls_out" | head -n 10 | sed 's/^/      /' >&2
        log "see $NERCC_BROKER_LOG_FILE; NERCC_BROKER_TLS=0 turns the AMQPS listener off"
    fi
fi

if [ -n "$LAUNCHED" ]; then
    print_summary "$NERCC_NODENAME" "$NERCC_AMQP_PORT" "$NERCC_MGMT_PORT" "$NERCC_PROMETHEUS_PORT" \
        "$(amqps_summary "$NERCC_BROKER_TLS" "$NERCC_AMQPS_PORT")"
else
    report_running
fi
