# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file
# Shared settings of the nercc development broker (a private RabbitMQ node).
#
# Source it from bash; it is sourced by start.sh and stop.sh, and by any
# script that talks to the node:
#
#   . ops/broker/env.sh
#   rabbitmqctl -n "$RABBITMQ_NODENAME" list_queues
#
# Inputs (environment, all optional):
#   NERCC_BROKER_DIR        state directory        (default <repo>/.broker)
#   NERCC_NODENAME          Erlang node name       (default nercc@localhost;
#                           RABBITMQ_NODENAME is accepted as a fallback)
#   NERCC_AMQP_PORT         AMQP listener          (default 5672)
#   NERCC_MGMT_PORT         management UI / API    (default 15672)
#   NERCC_PROMETHEUS_PORT   Prometheus endpoint    (default 15692)
#   NERCC_DIST_PORT         Erlang distribution    (default AMQP port + 20000,
#                           i.e. 25672 for the default AMQP port)
#   NERCC_BROKER_TLS        1 (default): AMQPS listener on; 0 (or false/no/off): off
#   NERCC_AMQPS_PORT        AMQPS (TLS) listener   (default AMQP port - 1,
#                           i.e. 5671 for the default AMQP port)
#
# Outputs: the NERCC_* values above (normalised), NERCC_AMQP_URL,
# NERCC_MGMT_URL, NERCC_PROMETHEUS_URL; with TLS on also NERCC_AMQPS_URL,
# NERCC_AMQPS_CA_FILE, NERCC_AMQPS_CLIENT_CERT_FILE and
# NERCC_AMQPS_CLIENT_KEY_FILE (unset with TLS off; the files are created by
# ops/broker/make_certs.sh on the first start); the RABBITMQ_* variables that point
# the server and the CLI tools at the private node, RABBITMQ_CTL_ERL_ARGS
# carrying the node's Erlang cookie (once the node has been initialised),
# and PATH with /usr/lib/rabbitmq/bin in front so that rabbitmqctl,
# rabbitmq-diagnostics and rabbitmq-plugins run directly (Debian's
# /usr/sbin wrappers only work for root and the rabbitmq user).
#
# The file only sets variables: it does not change shell options and is
# safe under `set -euo pipefail`. Sourcing it again recomputes everything.

# Repository root, from the location of this file.
if [ -n "${BASH_SOURCE[0]:-}" ]; then
    NERCC_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
elif [ -z "${NERCC_REPO_ROOT:-}" ]; then
    echo "ops/broker/env.sh: source it from bash, or set NERCC_REPO_ROOT" >&2
    # shellcheck disable=SC2317
    return 1 2>/dev/null || exit 1
fi
export NERCC_REPO_ROOT

# State directory (absolute; it does not need to exist yet).
NERCC_BROKER_DIR="${NERCC_BROKER_DIR:-$NERCC_REPO_ROOT/.broker}"
case "$NERCC_BROKER_DIR" in
    /*) ;;
    *) NERCC_BROKER_DIR="$PWD/$NERCC_BROKER_DIR" ;;
esac
# Drop trailing slashes (but keep "/" itself, which start.sh refuses anyway).
while [ "${#NERCC_BROKER_DIR}" -gt 1 ] && [ "${NERCC_BROKER_DIR%/}" != "$NERCC_BROKER_DIR" ]; do
    NERCC_BROKER_DIR="${NERCC_BROKER_DIR%/}"
done
export NERCC_BROKER_DIR

# Values that env.sh derived itself (instead of receiving them) are remembered
# in _NERCC_AUTO_*: when env.sh runs again in a shell or child process that
# inherited them, they count as unset, so that e.g.
#   . ops/broker/env.sh; RABBITMQ_NODENAME=n2 NERCC_AMQP_PORT=5682 ... start.sh
# gets node n2 with distribution port 25682 rather than the inherited defaults.
if [ -n "${_NERCC_AUTO_NODENAME:-}" ] && [ "${NERCC_NODENAME:-}" = "$_NERCC_AUTO_NODENAME" ]; then
    NERCC_NODENAME=""
fi
if [ -n "${_NERCC_AUTO_DIST_PORT:-}" ] && [ "${NERCC_DIST_PORT:-}" = "$_NERCC_AUTO_DIST_PORT" ]; then
    NERCC_DIST_PORT=""
fi
if [ -n "${_NERCC_AUTO_AMQPS_PORT:-}" ] && [ "${NERCC_AMQPS_PORT:-}" = "$_NERCC_AUTO_AMQPS_PORT" ]; then
    NERCC_AMQPS_PORT=""
fi
unset _NERCC_AUTO_NODENAME _NERCC_AUTO_DIST_PORT _NERCC_AUTO_AMQPS_PORT

# Node name: short name; "@localhost" is added when no host is given.
if [ -z "${NERCC_NODENAME:-}" ]; then
    NERCC_NODENAME="${RABBITMQ_NODENAME:-nercc@localhost}"
    _nercc_auto_nodename=1
fi
case "$NERCC_NODENAME" in
    *@*) ;;
    *) NERCC_NODENAME="$NERCC_NODENAME@localhost" ;;
esac
export NERCC_NODENAME
if [ -n "${_nercc_auto_nodename:-}" ]; then
    export _NERCC_AUTO_NODENAME="$NERCC_NODENAME"
fi
unset _nercc_auto_nodename

# Ports.
NERCC_AMQP_PORT="${NERCC_AMQP_PORT:-5672}"
NERCC_MGMT_PORT="${NERCC_MGMT_PORT:-15672}"
NERCC_PROMETHEUS_PORT="${NERCC_PROMETHEUS_PORT:-15692}"
if [ -z "${NERCC_DIST_PORT:-}" ]; then
    case "$NERCC_AMQP_PORT" in
        '' | *[!0-9]*) NERCC_DIST_PORT=25672 ;;
        *) NERCC_DIST_PORT="$((10#$NERCC_AMQP_PORT + 20000))" ;;
    esac
    export _NERCC_AUTO_DIST_PORT="$NERCC_DIST_PORT"
fi
export NERCC_AMQP_PORT NERCC_MGMT_PORT NERCC_PROMETHEUS_PORT NERCC_DIST_PORT

# TLS (on unless NERCC_BROKER_TLS=0): an AMQPS listener on 127.0.0.1:NERCC_AMQPS_PORT, by
# default the AMQP port - 1 (5671 next to 5672, 5681 next to 5682), with the
# certificates of ops/broker/make_certs.sh in <state>/tls.
case "${NERCC_BROKER_TLS:-1}" in
    0 | false | FALSE | False | no | NO | No | off | OFF | Off) NERCC_BROKER_TLS=0 ;;
    *) NERCC_BROKER_TLS=1 ;;
esac
if [ -z "${NERCC_AMQPS_PORT:-}" ]; then
    case "$NERCC_AMQP_PORT" in
        '' | *[!0-9]*) NERCC_AMQPS_PORT=5671 ;;
        *) NERCC_AMQPS_PORT="$((10#$NERCC_AMQP_PORT - 1))" ;;
    esac
    export _NERCC_AUTO_AMQPS_PORT="$NERCC_AMQPS_PORT"
fi
NERCC_BROKER_TLS_DIR="$NERCC_BROKER_DIR/tls"
export NERCC_BROKER_TLS NERCC_AMQPS_PORT NERCC_BROKER_TLS_DIR
if [ "$NERCC_BROKER_TLS" = 1 ]; then
    # rabbitmq-c 0.11 checks the host name against the certificate's DNS names
    # only (not its IP addresses): connect as "localhost", not 127.0.0.1. The
    # listener is bound to 127.0.0.1 only, so guest (loopback_users) is accepted.
    export NERCC_AMQPS_URL="amqps://guest:guest@localhost:$NERCC_AMQPS_PORT/"
    export NERCC_AMQPS_CA_FILE="$NERCC_BROKER_TLS_DIR/ca.pem"
    export NERCC_AMQPS_CLIENT_CERT_FILE="$NERCC_BROKER_TLS_DIR/client.pem"
    export NERCC_AMQPS_CLIENT_KEY_FILE="$NERCC_BROKER_TLS_DIR/client.key"
else
    unset NERCC_AMQPS_URL NERCC_AMQPS_CA_FILE NERCC_AMQPS_CLIENT_CERT_FILE NERCC_AMQPS_CLIENT_KEY_FILE
fi

export NERCC_AMQP_URL="amqp://guest:guest@127.0.0.1:$NERCC_AMQP_PORT/"
export NERCC_MGMT_URL="http://127.0.0.1:$NERCC_MGMT_PORT/"
export NERCC_PROMETHEUS_URL="http://127.0.0.1:$NERCC_PROMETHEUS_PORT/metrics"

# Layout of the state directory (not exported: internal to the scripts).
NERCC_BROKER_HOME="$NERCC_BROKER_DIR/home"                 # HOME of the node
NERCC_BROKER_COOKIE_FILE="$NERCC_BROKER_HOME/.erlang.cookie"
NERCC_BROKER_CLI_ARGS_FILE="$NERCC_BROKER_HOME/nercc-cli.args"  # "-setcookie ..." for the CLI
NERCC_BROKER_MARKER="$NERCC_BROKER_DIR/.nercc-broker"      # marks a directory we own
NERCC_BROKER_TEMPLATE_DIR="$NERCC_REPO_ROOT/ops/rabbitmq"

# Everything RabbitMQ reads or writes lives in the state directory; nothing
# from /etc/rabbitmq or /var/lib/rabbitmq is used.
export RABBITMQ_NODENAME="$NERCC_NODENAME"
export RABBITMQ_MNESIA_BASE="$NERCC_BROKER_DIR/mnesia"
export RABBITMQ_LOG_BASE="$NERCC_BROKER_DIR/log"
export RABBITMQ_CONFIG_FILE="$NERCC_BROKER_DIR/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$NERCC_BROKER_DIR/advanced.config"
export RABBITMQ_CONFIG_FILES="$NERCC_BROKER_DIR/conf.d"
export RABBITMQ_CONF_ENV_FILE="$NERCC_BROKER_DIR/rabbitmq-env.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$NERCC_BROKER_DIR/enabled_plugins"
export RABBITMQ_PID_FILE="$NERCC_BROKER_DIR/rabbitmq.pid"
export RABBITMQ_DIST_PORT="$NERCC_DIST_PORT"
NERCC_BROKER_LOG_FILE="$RABBITMQ_LOG_BASE/$NERCC_NODENAME.log"
NERCC_BROKER_STARTUP_LOG="$RABBITMQ_LOG_BASE/startup.log"

# Erlang cookie for the CLI tools. The node reads $NERCC_BROKER_HOME/.erlang.cookie
# (its HOME); the CLI tools get the same cookie through erl's -args_file, so
# the cookie never appears on a command line. (RABBITMQ_ERLANG_COOKIE still
# works on 3.10.8 but prints a deprecation warning on every call.)
# An -args_file added by a previous sourcing (possibly for another state
# directory) is replaced; other RABBITMQ_CTL_ERL_ARGS content is kept.
_nercc_ctl_args="$(printf ' %s ' "${RABBITMQ_CTL_ERL_ARGS:-}" |
    sed -E 's#[[:space:]]-args_file[[:space:]]+[^[:space:]]*/nercc-cli\.args[[:space:]]# #g;
            s#^[[:space:]]+##; s#[[:space:]]+$##')"
if [ -r "$NERCC_BROKER_CLI_ARGS_FILE" ]; then
    _nercc_ctl_args="${_nercc_ctl_args:+$_nercc_ctl_args }-args_file $NERCC_BROKER_CLI_ARGS_FILE"
fi
if [ -n "$_nercc_ctl_args" ]; then
    export RABBITMQ_CTL_ERL_ARGS="$_nercc_ctl_args"
else
    unset RABBITMQ_CTL_ERL_ARGS
fi
unset _nercc_ctl_args

# Debian's rabbitmq-server ships the real CLI scripts here.
NERCC_RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
case ":$PATH:" in
    *":$NERCC_RABBITMQ_BIN:"*) ;;
    *) export PATH="$NERCC_RABBITMQ_BIN:$PATH" ;;
esac

# Name of the environment variable that marks every process of a node
# started by start.sh; its value is the state directory. stop.sh uses it to
# find the processes of THIS node only (never a system node, never another
# state directory).
NERCC_BROKER_INSTANCE_VAR="NERCC_BROKER_INSTANCE"

# nercc_broker_pids: print the pids of the live processes of the private node
# of $NERCC_BROKER_DIR (the rabbitmq-server shell wrapper, beam.smp and its
# helpers). epmd is never listed: it is shared by every Erlang node on the host.
# Needs root or the user the node runs as (it reads /proc/<pid>/environ).
nercc_broker_pids() {
    local want="$NERCC_BROKER_INSTANCE_VAR=$NERCC_BROKER_DIR" p pid comm stat state
    local pidfile_pid=""
    if [ -r "$RABBITMQ_PID_FILE" ]; then
        read -r pidfile_pid <"$RABBITMQ_PID_FILE" 2>/dev/null || true
    fi
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        if grep -qzxF -- "$want" "$p/environ" 2>/dev/null; then
            :
        elif [ "$pid" = "$pidfile_pid" ] &&
            tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$NERCC_BROKER_HOME"; then
            : # the pid file names a beam whose HOME (-home) is this state directory
        else
            continue
        fi
        comm="$(cat "$p/comm" 2>/dev/null)" || continue
        [ "$comm" = "epmd" ] && continue
        stat="$(cat "$p/stat" 2>/dev/null)" || continue
        state="${stat##*) }"
        state="${state%% *}"
        case "$state" in Z | X) continue ;; esac
        echo "$pid"
    done
}
