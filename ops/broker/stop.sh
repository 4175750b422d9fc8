#!/usr/bin/env bash
# Stop the private RabbitMQ node of nercc.
#
#   ops/broker/stop.sh             stop the node (exit 0 if it was not running)
#   ops/broker/stop.sh --purge     stop it and delete its state directory
#
# Uses the same settings as start.sh (ops/broker/env.sh); set the same
# NERCC_BROKER_DIR / NERCC_NODENAME as for the start. NERCC_BROKER_STOP_TIMEOUT
# (seconds, default 30) bounds the graceful stop. Only processes of the node
# of NERCC_BROKER_DIR are ever signalled; epmd and other nodes are left alone.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
STOP_TIMEOUT="${NERCC_BROKER_STOP_TIMEOUT:-30}"

log() { printf 'broker: %s\n' "$*" >&2; }
die() {
    printf 'broker: ERROR: %s\n' "$*" >&2
    exit 1
}

PURGE=""
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "NERCC_BROKER_STOP_TIMEOUT must be a number of seconds"

# shellcheck source=ops/broker/env.sh
. "$SCRIPT_DIR/env.sh"

pids_now() { nercc_broker_pids | tr '\n' ' ' | sed 's/ $//'; }

wait_gone() { # seconds -> 0 when no process of the node is left
    local end=$((SECONDS + $1))
    while [ -n "$(pids_now)" ]; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.5
    done
}

PIDS="$(pids_now)"
if [ -z "$PIDS" ]; then
    log "node $NERCC_NODENAME ($NERCC_BROKER_DIR) is not running"
else
    log "stopping $NERCC_NODENAME (pids $PIDS)"
    stopped=""
    # 1. Graceful: ask the node to stop (needs the cookie, i.e. root or the node user).
    if command -v rabbitmqctl >/dev/null 2>&1 &&
        timeout "$((STOP_TIMEOUT + 5))" rabbitmqctl -q -n "$NERCC_NODENAME" -t "$STOP_TIMEOUT" stop \
            </dev/null >/dev/null 2>&1; then
        wait_gone "$STOP_TIMEOUT" && stopped=1
    else
        log "rabbitmqctl stop did not succeed (node not answering?); falling back to signals"
    fi
    # 2. SIGTERM (the node shuts down cleanly on TERM), then SIGKILL.
    if [ -z "$stopped" ]; then
        PIDS="$(pids_now)"
        if [ -n "$PIDS" ]; then
            log "sending TERM to $PIDS"
            # shellcheck disable=SC2086
            kill -TERM $PIDS 2>/dev/null || true
            if ! wait_gone 15; then
                PIDS="$(pids_now)"
                log "sending KILL to $PIDS"
                # shellcheck disable=SC2086
                kill -KILL $PIDS 2>/dev/null || true
                wait_gone 5 || die "processes $(pids_now) of $NERCC_NODENAME survived SIGKILL"
            fi
        fi
    fi
    rm -f "$RABBITMQ_PID_FILE"
    log "node $NERCC_NODENAME stopped"
fi

if [ -n "$PURGE" ] && [ -e "$NERCC_BROKER_DIR" ]; then
    if [ ! -e "$NERCC_BROKER_MARKER" ] && [ -n "$(ls -A "$NERCC_BROKER_DIR" 2>/dev/null)" ]; then
        die "not purging $NERCC_BROKER_DIR: it was not created by ops/broker/start.sh"
    fi
    rm -rf -- "$NERCC_BROKER_DIR"
    log "removed $NERCC_BROKER_DIR"
fi
exit 0
