#!/usr/bin/env bash
# A local three-node RabbitMQ cluster (development, fault-injection tests).
#
#   ops/broker/cluster.sh start                 start the three nodes and cluster them
#   ops/broker/cluster.sh stop [--purge]        stop all nodes (--purge: delete the state)
#   ops/broker/cluster.sh stop-node I [--kill]  stop node I (1, 2, 3 or its name); --kill: SIGKILL
#   ops/broker/cluster.sh start-node I          start node I again, wait until it has rejoined
#   ops/broker/cluster.sh status                running nodes; exit 1 unless all three run
#   ops/broker/cluster.sh env                   export lines: eval "$(ops/broker/cluster.sh env)"
#   ops/broker/cluster.sh leader QUEUE          node leading quorum queue QUEUE (vhost /)
#   ops/broker/cluster.sh members QUEUE [--online]   its members, one per line
#   ops/broker/cluster.sh wait-members QUEUE COUNT [TIMEOUT]   wait for COUNT online members
#
# Each node is a private node of ops/broker/start.sh / stop.sh with its own
# state directory, name and ports; all share one Erlang cookie. Settings:
# NERCC_CLUSTER_DIR (default <repo>/.broker-cluster), NERCC_CLUSTER_NAME
# (nercc-c: nodes nercc-c1@localhost .. nercc-c3@localhost),
# NERCC_CLUSTER_AMQP_PORT (5691; nodes 5691, 5693, 5695; distribution = AMQP
# + 20000), NERCC_CLUSTER_MGMT_PORT (15711, 15712, 15713),
# NERCC_CLUSTER_PROMETHEUS_PORT (15721, 15722, 15723),
# NERCC_CLUSTER_START_TIMEOUT (seconds, default 120). TLS is off. See README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd -P)"
RABBITMQ_BIN="/usr/lib/rabbitmq/bin"
NODES=(1 2 3)
CALLER_CTL_ERL_ARGS="${RABBITMQ_CTL_ERL_ARGS:-}" # kept by `env`, apart from nercc cookie files

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    printf 'cluster: ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# ------------------------------------------------------------ settings

CLUSTER_DIR="${NERCC_CLUSTER_DIR:-$REPO_ROOT/.broker-cluster}"
case "$CLUSTER_DIR" in
    /*) ;;
    *) CLUSTER_DIR="$PWD/$CLUSTER_DIR" ;;
esac
while [ "${#CLUSTER_DIR}" -gt 1 ] && [ "${CLUSTER_DIR%/}" != "$CLUSTER_DIR" ]; do
    CLUSTER_DIR="${CLUSTER_DIR%/}"
done
CLUSTER_NAME="${NERCC_CLUSTER_NAME:-nercc-c}"
AMQP_BASE="${NERCC_CLUSTER_AMQP_PORT:-5691}"
MGMT_BASE="${NERCC_CLUSTER_MGMT_PORT:-15711}"
PROM_BASE="${NERCC_CLUSTER_PROMETHEUS_PORT:-15721}"
START_TIMEOUT="${NERCC_CLUSTER_START_TIMEOUT:-120}"

case "$CLUSTER_DIR" in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /proc | /root | /run | /sbin | /srv | /sys | /tmp | /usr | /var | /var/tmp)
        die "refusing to use NERCC_CLUSTER_DIR=$CLUSTER_DIR; choose a dedicated directory"
        ;;
esac
[[ "$CLUSTER_DIR" =~ ^[A-Za-z0-9_./@+-]+$ ]] ||
    die "NERCC_CLUSTER_DIR must not contain spaces or special characters: $CLUSTER_DIR"
[[ "$CLUSTER_NAME" =~ ^[A-Za-z0-9_-]+$ ]] ||
    die "NERCC_CLUSTER_NAME must be letters, digits, '-' or '_' (the nodes are <name>1@localhost ...), got '$CLUSTER_NAME'"
for spec in "NERCC_CLUSTER_AMQP_PORT:$AMQP_BASE" "NERCC_CLUSTER_MGMT_PORT:$MGMT_BASE" \
    "NERCC_CLUSTER_PROMETHEUS_PORT:$PROM_BASE"; do
    value="${spec#*:}"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$((10#$value))" -lt 1 ] || [ "$((10#$value))" -gt 45530 ]; then
        die "${spec%%:*} must be a TCP port number below 45531, got '$value'"
    fi
done
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "NERCC_CLUSTER_START_TIMEOUT must be a number of seconds"

# Node i (1..3): name, state directory and ports. AMQP ports step by 2 (as
# other nercc nodes do, so that AMQP port - 1 stays free for an AMQPS
# listener); the distribution port is AMQP + 20000, as env.sh derives it.
declare -a NAME DIR AMQP MGMT PROM DIST
for i in "${NODES[@]}"; do
    NAME[i]="$CLUSTER_NAME$i@localhost"
    DIR[i]="$CLUSTER_DIR/node$i"
    AMQP[i]=$((10#$AMQP_BASE + 2 * (i - 1)))
    MGMT[i]=$((10#$MGMT_BASE + i - 1))
    PROM[i]=$((10#$PROM_BASE + i - 1))
    DIST[i]=$((AMQP[i] + 20000))
done
ALL_PORTS=("${AMQP[@]}" "${MGMT[@]}" "${PROM[@]}" "${DIST[@]}")
if [ "$(printf '%s\n' "${ALL_PORTS[@]}" | sort -u | wc -l)" -ne "${#ALL_PORTS[@]}" ]; then
    die "the AMQP, management, Prometheus and distribution ports of the three nodes overlap (${ALL_PORTS[*]}); change NERCC_CLUSTER_*_PORT"
fi
for p in "${ALL_PORTS[@]}"; do
    [ "$p" -ne 4369 ] || die "no node port may be 4369 (epmd); change NERCC_CLUSTER_*_PORT"
done

COOKIE_FILE="$CLUSTER_DIR/cookie"          # the cookie every node copies (start.sh)
CLI_ARGS_FILE="$CLUSTER_DIR/nercc-cli.args" # "-setcookie ..." for the CLI tools
MARKER="$CLUSTER_DIR/.nercc-broker-cluster"
LOCK_FILE="$CLUSTER_DIR/.cluster.lock"

case ":$PATH:" in
    *":$RABBITMQ_BIN:"*) ;;
    *) export PATH="$RABBITMQ_BIN:$PATH" ;;
esac

join_by_comma() { local IFS=,; echo "$*"; }
amqp_url() { echo "amqp://guest:guest@127.0.0.1:${AMQP[$1]}/%2F"; }
mgmt_url() { echo "http://127.0.0.1:${MGMT[$1]}/"; }

# ------------------------------------------------------------ node helpers

# Run a command (start.sh, stop.sh, ...) with the settings of node $1.
node_run() {
    local i="$1"
    shift
    env -u _NERCC_AUTO_NODENAME -u _NERCC_AUTO_DIST_PORT -u _NERCC_AUTO_AMQPS_PORT \
        NERCC_BROKER_DIR="${DIR[i]}" NERCC_NODENAME="${NAME[i]}" \
        NERCC_AMQP_PORT="${AMQP[i]}" NERCC_MGMT_PORT="${MGMT[i]}" \
        NERCC_PROMETHEUS_PORT="${PROM[i]}" NERCC_DIST_PORT="${DIST[i]}" \
        NERCC_BROKER_TLS=0 NERCC_AMQPS_PORT="$((AMQP[i] - 1))" \
        NERCC_BROKER_COOKIE_SOURCE="$COOKIE_FILE" \
        NERCC_BROKER_START_TIMEOUT="$START_TIMEOUT" \
        "$@"
}

# Same, with the output of the broker scripts on stderr, labelled with the
# node. The lock descriptor (8) is closed: a node started here must not hold
# the cluster's lock for as long as it runs.
node_script() { # index script [args...]
    local i="$1"
    shift
    node_run "$i" "$@" 2>&1 >/dev/null </dev/null 8>&- | sed -u "s/^broker: /cluster: [node $i] /" >&2
}

node_pids() { # index -> pids of the node's processes (see env.sh)
    (
        export NERCC_BROKER_DIR="${DIR[$1]}" NERCC_NODENAME="${NAME[$1]}"
        # shellcheck source=ops/broker/env.sh
        . "$SCRIPT_DIR/env.sh"
        nercc_broker_pids
    )
}

# CLI tools against node $1, with the cluster's cookie; stdin closed, bounded in time.
ctl() {
    local i="$1"
    shift
    RABBITMQ_CTL_ERL_ARGS="-args_file $CLI_ARGS_FILE" timeout 120 \
        rabbitmqctl -q -n "${NAME[i]}" "$@" </dev/null 8>&-
}
# in_parallel "I J ..." COMMAND ARGS...: runs `COMMAND I ARGS...` for each node index at once;
# leaves the names of the nodes where it failed in FAILED (empty: none).
in_parallel() {
    local nodes i pids=()
    read -r -a nodes <<<"$1"
    shift
    FAILED=""
    for i in "${nodes[@]}"; do
        "$1" "$i" "${@:2}" &
        pids[i]=$!
    done
    for i in "${nodes[@]}"; do
        wait "${pids[i]}" || FAILED="$FAILED ${NAME[i]}"
    done
}
ctl_quiet() { ctl "$@" >/dev/null; }
diag() {
    local i="$1"
    shift
    RABBITMQ_CTL_ERL_ARGS="-args_file $CLI_ARGS_FILE" timeout 60 \
        rabbitmq-diagnostics -q -n "${NAME[i]}" "$@" </dev/null 8>&-
}

# Is node $1 up with the rabbit application running?
node_up() {
    [ -r "$CLI_ARGS_FILE" ] || return 1
    [ -n "$(node_pids "$1")" ] || return 1
    diag "$1" check_running -t 15 >/dev/null 2>&1
}

# UP[i]=1 for each node that is up (checked in parallel: each CLI call boots an Erlang VM).
declare -a UP
check_nodes() {
    local i dir
    dir="$(mktemp -d)"
    for i in "${NODES[@]}"; do
        (if node_up "$i"; then echo 1; else echo 0; fi) >"$dir/$i" &
    done
    wait
    for i in "${NODES[@]}"; do
        UP[i]="$(cat "$dir/$i")"
    done
    rm -rf "$dir"
}
all_up() { [ "${UP[1]}${UP[2]}${UP[3]}" = 111 ]; }
first_up() { # [except-index] -> index of the first node that is up
    local i
    for i in "${NODES[@]}"; do
        [ "$i" != "${1:-}" ] || continue
        if [ "${UP[i]}" = 1 ]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

# Cluster view of node $1: the nodes it sees running, one per line.
view_of() {
    local json
    json="$(ctl "$1" cluster_status --formatter json 2>/dev/null)" || return 1
    printf '%s' "$json" | python3 -c '
import json, sys
for n in json.load(sys.stdin).get("running_nodes", []):
    print(n)'
}

# Does node $1 see all three nodes running?
sees_all() {
    local running i
    running="$(view_of "$1")" || return 1
    for i in "${NODES[@]}"; do
        grep -qxF -- "${NAME[i]}" <<<"$running" || return 1
    done
}

# Make the given nodes running members of the cluster of node $1: each one
# that does not see the seed running is joined (stop_app, join_cluster,
# start_app). stop_app and start_app run in parallel, join_cluster one node at
# a time.
join_nodes() { # seed index...
    local seed="$1" i out dir joining=() pids=()
    shift
    dir="$(mktemp -d)"
    for i in "$@"; do
        view_of "$i" >"$dir/$i" 2>/dev/null &
        pids[i]=$!
    done
    for i in "$@"; do
        wait "${pids[i]}" || {
            rm -rf "$dir"
            die "cannot read the cluster status of ${NAME[i]}"
        }
        grep -qxF -- "${NAME[seed]}" "$dir/$i" || joining+=("$i")
    done
    rm -rf "$dir"
    [ "${#joining[@]}" -gt 0 ] || return 0
    log "joining $(for i in "${joining[@]}"; do printf '%s ' "${NAME[i]}"; done)to the cluster of ${NAME[seed]} (stop_app, join_cluster, start_app)"
    in_parallel "${joining[*]}" ctl_quiet stop_app
    [ -z "$FAILED" ] || die "rabbitmqctl stop_app failed on:$FAILED"
    for i in "${joining[@]}"; do
        if ! out="$(ctl "$i" join_cluster "${NAME[seed]}" 2>&1)"; then
            # The seed may still list an earlier incarnation of this node (its
            # state directory was deleted): forget it, then join again.
            log "join_cluster failed ($(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)); forgetting ${NAME[i]} on ${NAME[seed]} and retrying"
            ctl "$seed" forget_cluster_node "${NAME[i]}" >/dev/null 2>&1 || true
            ctl "$i" reset >/dev/null 2>&1 || true
            if ! out="$(ctl "$i" join_cluster "${NAME[seed]}" 2>&1)"; then
                ctl "$i" start_app >/dev/null 2>&1 || true
                die "rabbitmqctl -n ${NAME[i]} join_cluster ${NAME[seed]} failed: $out"
            fi
            # Forgetting a node also removes it from every quorum queue.
            log "note: quorum queues no longer count ${NAME[i]} as a member; to add it back: rabbitmq-queues -n ${NAME[i]} grow ${NAME[i]} all"
        fi
    done
    in_parallel "${joining[*]}" ctl_quiet start_app
    [ -z "$FAILED" ] || die "rabbitmqctl start_app failed on:$FAILED"
}

# ------------------------------------------------------------ state directory

prepare_cluster_dir() {
    if [ -e "$CLUSTER_DIR" ]; then
        [ -d "$CLUSTER_DIR" ] || die "NERCC_CLUSTER_DIR=$CLUSTER_DIR exists and is not a directory"
        if [ ! -e "$MARKER" ] && [ -n "$(ls -A "$CLUSTER_DIR" 2>/dev/null)" ]; then
            die "NERCC_CLUSTER_DIR=$CLUSTER_DIR is not empty and was not created by ops/broker/cluster.sh; choose another directory"
        fi
    fi
    mkdir -p "$CLUSTER_DIR" || die "cannot create $CLUSTER_DIR"
    [ -w "$CLUSTER_DIR" ] || die "$CLUSTER_DIR is not writable by $(id -un); run as the user that started the cluster, or use another NERCC_CLUSTER_DIR"
    echo "nercc broker cluster state; safe to delete when the nodes are stopped (ops/broker/cluster.sh stop --purge)" >"$MARKER"
}

take_lock() {
    exec 8>"$LOCK_FILE"
    if command -v flock >/dev/null 2>&1; then
        flock -w "$((START_TIMEOUT * 2 + 60))" 8 || die "another ops/broker/cluster.sh holds $LOCK_FILE"
    fi
}

# One cookie for all nodes: created once per cluster directory (or recovered
# from a node that already has one), copied into each node's state directory
# by start.sh (NERCC_BROKER_COOKIE_SOURCE). The CLI tools get it through an
# erl args file, so it never appears on a command line.
prepare_cookie() {
    local cookie="" i
    if [ -s "$COOKIE_FILE" ]; then
        cookie="$(tr -d '\n' <"$COOKIE_FILE")"
    else
        for i in "${NODES[@]}"; do
            if [ -s "${DIR[i]}/home/.erlang.cookie" ]; then
                cookie="$(tr -d '\n' <"${DIR[i]}/home/.erlang.cookie")"
                log "reusing the cookie of ${DIR[i]} for the cluster"
                break
            fi
        done
        [ -n "$cookie" ] || cookie="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')"
        (
            umask 077
            printf '%s' "$cookie" >"$COOKIE_FILE.tmp"
        )
        mv -f "$COOKIE_FILE.tmp" "$COOKIE_FILE"
    fi
    [[ "$cookie" =~ ^[A-Za-z0-9]+$ ]] || die "unexpected content in $COOKIE_FILE; delete it (with the nodes stopped) to regenerate"
    (
        umask 077
        printf -- '-setcookie %s\n' "$cookie" >"$CLI_ARGS_FILE.tmp"
    )
    mv -f "$CLI_ARGS_FILE.tmp" "$CLI_ARGS_FILE"
}

# Start the given nodes in parallel with start.sh; die if any fails.
start_nodes() {
    in_parallel "$*" node_script "$SCRIPT_DIR/start.sh"
    [ -z "$FAILED" ] ||
        die "could not start:$FAILED (see the messages above and $CLUSTER_DIR/node*/log/); 'ops/broker/cluster.sh stop' stops what did start"
}

wait_all_running() { # seconds -> 0 once some node sees all three running
    local end=$((SECONDS + $1)) i
    while :; do
        for i in "${NODES[@]}"; do
            if sees_all "$i"; then return 0; fi
        done
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 1
    done
}

print_summary() {
    local i urls=() mgmts=()
    for i in "${NODES[@]}"; do
        urls+=("$(amqp_url "$i")")
        mgmts+=("$(mgmt_url "$i")")
    done
    cat <<EOF
RabbitMQ cluster of 3 nodes is running (state: $CLUSTER_DIR)
  Nodes:       $(join_by_comma "${NAME[@]}")
  AMQP:        $(join_by_comma "${urls[@]}")
  Management:  $(mgmt_url 1)   (user guest, password guest; shows all three nodes; also ${mgmts[1]}, ${mgmts[2]})
  Prometheus:  http://127.0.0.1:${PROM[1]}/metrics, :${PROM[2]}, :${PROM[3]}
  Logs:        $CLUSTER_DIR/node<i>/log/<node>.log
  CLI:         eval "\$(ops/broker/cluster.sh env)" && rabbitmqctl -n ${NAME[1]} cluster_status
EOF
}

# ------------------------------------------------------------ commands

resolve_node() { # 1 | 2 | 3 | full or short node name -> index
    local i
    for i in "${NODES[@]}"; do
        case "$1" in
            "$i" | "${NAME[i]}" | "${NAME[i]%@*}")
                echo "$i"
                return 0
                ;;
        esac
    done
    die "unknown node '$1': use 1, 2, 3 or one of ${NAME[*]}"
}

cmd_start() {
    local t0=$SECONDS i seed down=()
    command -v python3 >/dev/null 2>&1 || die "python3 is needed (it reads the JSON of rabbitmqctl)"
    prepare_cluster_dir
    take_lock
    prepare_cookie
    check_nodes
    if all_up && sees_all 1; then
        log "the cluster is already running"
        print_summary
        return 0
    fi
    for i in "${NODES[@]}"; do
        [ "${UP[i]}" = 1 ] || down+=("$i")
    done
    if [ "${#down[@]}" -gt 0 ]; then
        # In parallel: faster, and needed when the whole cluster was stopped,
        # since a restarting member waits for the peers it last saw running.
        log "starting $(for i in "${down[@]}"; do printf '%s ' "${NAME[i]}"; done)$([ "${#down[@]}" -eq 1 ] || echo '(in parallel)')"
        start_nodes "${down[@]}"
        log "all nodes booted after $((SECONDS - t0))s"
    fi
    join_nodes 1 2 3
    wait_all_running 60 || die "the nodes did not form one cluster within 60s; see 'ops/broker/cluster.sh status'"
    log "cluster of ${NAME[*]} is up ($((SECONDS - t0))s)"
    print_summary
}

cmd_stop() {
    local purge="" i
    case "${1:-}" in
        "") ;;
        --purge) purge=1 ;;
        *) die "unknown argument for stop: $1 (use --purge)" ;;
    esac
    if [ ! -d "$CLUSTER_DIR" ]; then
        log "nothing to stop: $CLUSTER_DIR does not exist"
        return 0
    fi
    if [ -n "$purge" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$CLUSTER_DIR" 2>/dev/null)" ]; then
        die "not purging $CLUSTER_DIR: it was not created by ops/broker/cluster.sh"
    fi
    [ ! -w "$CLUSTER_DIR" ] || take_lock
    # In parallel; stop.sh is a no-op for a node that is not running.
    in_parallel "${NODES[*]}" node_script "$SCRIPT_DIR/stop.sh" ${purge:+--purge}
    [ -z "$FAILED" ] || die "could not stop:$FAILED"
    if [ -n "$purge" ]; then
        rm -rf -- "$CLUSTER_DIR"
        log "removed $CLUSTER_DIR"
    fi
}

cmd_stop_node() {
    local i kill="" pids
    [ $# -ge 1 ] || die "usage: cluster.sh stop-node I [--kill]"
    i="$(resolve_node "$1")"
    case "${2:-}" in
        "") ;;
        --kill) kill=1 ;;
        *) die "unknown argument for stop-node: $2 (use --kill)" ;;
    esac
    [ -d "${DIR[i]}" ] || {
        log "${NAME[i]} is not running (no state directory)"
        return 0
    }
    if [ -n "$kill" ]; then
        pids="$(node_pids "$i" | tr '\n' ' ')"
        if [ -z "${pids// /}" ]; then
            log "${NAME[i]} is not running"
            return 0
        fi
        log "killing ${NAME[i]} (SIGKILL to ${pids% })"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        local end=$((SECONDS + 10))
        while [ -n "$(node_pids "$i")" ]; do
            [ "$SECONDS" -lt "$end" ] || die "processes of ${NAME[i]} survived SIGKILL: $(node_pids "$i" | tr '\n' ' ')"
            sleep 0.2
        done
        log "node ${NAME[i]} killed"
    else
        node_script "$i" "$SCRIPT_DIR/stop.sh"
    fi
}

cmd_start_node() {
    local i t0=$SECONDS seed running j
    [ $# -eq 1 ] || die "usage: cluster.sh start-node I"
    i="$(resolve_node "$1")"
    prepare_cluster_dir
    take_lock
    prepare_cookie
    start_nodes "$i"
    # A node that was a member rejoins by itself while it boots (its
    # membership is in its mnesia directory): once booted, it sees the other
    # running members. A node that sees none is either alone or new (fresh
    # state directory); a new one is joined to a running node here.
    running="$(view_of "$i")" || die "cannot read the cluster status of ${NAME[i]}"
    for j in "${NODES[@]}"; do
        if [ "$j" != "$i" ] && grep -qxF -- "${NAME[j]}" <<<"$running"; then
            log "${NAME[i]} is running and has rejoined the cluster (running nodes: $(paste -sd' ' <<<"$running"); $((SECONDS - t0))s)"
            return 0
        fi
    done
    check_nodes
    if seed="$(first_up "$i")"; then
        join_nodes "$seed" "$i"
        log "${NAME[i]} is running and has joined the cluster ($((SECONDS - t0))s)"
    else
        log "${NAME[i]} is running; no other node is up"
    fi
}

cmd_status() {
    local i seed json rc=0
    check_nodes
    for i in "${NODES[@]}"; do
        if [ "${UP[i]}" = 1 ]; then
            printf '%-24s running       %s  %s\n' "${NAME[i]}" "$(amqp_url "$i")" "$(mgmt_url "$i")"
        elif [ -n "$(node_pids "$i" 2>/dev/null)" ]; then
            printf '%-24s not ready     (process up, rabbit application not running)\n' "${NAME[i]}"
            rc=1
        else
            printf '%-24s not running\n' "${NAME[i]}"
            rc=1
        fi
    done
    if seed="$(first_up)"; then
        echo "cluster_status (as seen by ${NAME[seed]}):"
        json="$(ctl "$seed" cluster_status --formatter json 2>/dev/null)" || json="{}"
        printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("  members:       " + (" ".join(d.get("disk_nodes", [])) or "?"))
print("  running nodes: " + (" ".join(d.get("running_nodes", [])) or "?"))
for key in ("partitions", "alarms"):
    if d.get(key):
        print("  %-14s %s" % (key + ":", json.dumps(d[key])))
sys.exit(0 if set(sys.argv[1:]) <= set(d.get("running_nodes", [])) else 1)' "${NAME[@]}" || rc=1
    else
        echo "no node is running"
    fi
    return "$rc"
}

export_line() { # name value -> export name='value' (single-quoted for eval)
    local q="'\\''"
    printf "export %s='%s'\n" "$1" "${2//\'/$q}"
}

cmd_env() {
    local i urls=() mgmts=() proms=() ctl_args
    for i in "${NODES[@]}"; do
        urls+=("$(amqp_url "$i")")
        mgmts+=("$(mgmt_url "$i")")
        proms+=("http://127.0.0.1:${PROM[i]}/metrics")
    done
    export_line NERCC_CLUSTER_DIR "$CLUSTER_DIR"
    export_line NERCC_CLUSTER_NODES "$(join_by_comma "${NAME[@]}")"
    export_line NERCC_CLUSTER_URLS "$(join_by_comma "${urls[@]}")"
    export_line NERCC_CLUSTER_MGMT_URLS "$(join_by_comma "${mgmts[@]}")"
    export_line NERCC_CLUSTER_PROMETHEUS_URLS "$(join_by_comma "${proms[@]}")"
    # The CLI tools: on PATH, and the cluster's cookie through an erl args
    # file (one cookie for all three nodes). An args file of another nercc
    # node in RABBITMQ_CTL_ERL_ARGS is replaced, anything else is kept.
    # shellcheck disable=SC2016  # $PATH is expanded by the shell that evaluates the line
    printf 'case ":$PATH:" in *":%s:"*) ;; *) export PATH="%s:$PATH" ;; esac\n' "$RABBITMQ_BIN" "$RABBITMQ_BIN"
    if [ -r "$CLI_ARGS_FILE" ]; then
        ctl_args="$(printf ' %s ' "$CALLER_CTL_ERL_ARGS" |
            sed -E 's#[[:space:]]-args_file[[:space:]]+[^[:space:]]*/nercc-cli\.args[[:space:]]# #g;
                    s#^[[:space:]]+##; s#[[:space:]]+$##')"
        export_line RABBITMQ_CTL_ERL_ARGS "${ctl_args:+$ctl_args }-args_file $CLI_ARGS_FILE"
    else
        log "no cookie yet ($CLI_ARGS_FILE is missing or unreadable): run 'ops/broker/cluster.sh start' first, as the same user"
    fi
}

# GET /api/queues/%2F/QUEUE from the first node whose management API answers;
# prints the JSON. Exit 2 when the queue does not exist, 1 when no node answers.
queue_json() {
    local q="$1" enc i code body
    enc="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$q")"
    body="$(mktemp)"
    for i in "${NODES[@]}"; do
        code="$(curl -s -o "$body" -w '%{http_code}' -m 10 -u guest:guest \
            "http://127.0.0.1:${MGMT[i]}/api/queues/%2F/$enc" 2>/dev/null)" || code=000
        case "$code" in
            200)
                cat "$body"
                rm -f "$body"
                return 0
                ;;
            404)
                rm -f "$body"
                return 2
                ;;
        esac
    done
    rm -f "$body"
    return 1
}

# Field of a quorum queue's JSON: leader | members | online (one per line).
queue_field() { # json field
    printf '%s' "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("type") != "quorum":
    sys.exit("not a quorum queue (type %s)" % d.get("type"))
v = d.get(sys.argv[1])
if isinstance(v, list):
    for n in v:
        print(n)
elif v:
    print(v)' "$2"
}

queue_or_die() { # queue -> JSON
    local json rc=0
    json="$(queue_json "$1")" || rc=$?
    case "$rc" in
        0) printf '%s' "$json" ;;
        2) die "queue '$1' does not exist on vhost /" ;;
        *) die "no management API answers (ports ${MGMT[*]}); is the cluster running?" ;;
    esac
}

cmd_leader() {
    local json leader
    [ $# -eq 1 ] || die "usage: cluster.sh leader QUEUE"
    json="$(queue_or_die "$1")"
    leader="$(queue_field "$json" leader)" || die "queue '$1': cannot read its leader"
    [ -n "$leader" ] || die "queue '$1' has no leader right now"
    echo "$leader"
}

cmd_members() {
    local json field=members
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: cluster.sh members QUEUE [--online]"; fi
    case "${2:-}" in
        "") ;;
        --online) field=online ;;
        *) die "unknown argument for members: $2 (use --online)" ;;
    esac
    json="$(queue_or_die "$1")"
    queue_field "$json" "$field" || die "queue '$1': cannot read its $field"
}

cmd_wait_members() {
    local q count timeout end json members online leader n next_report
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then die "usage: cluster.sh wait-members QUEUE COUNT [TIMEOUT]"; fi
    q="$1" count="$2" timeout="${3:-60}"
    [[ "$count" =~ ^[0-9]+$ ]] || die "COUNT must be a number, got '$count'"
    [[ "$timeout" =~ ^[0-9]+$ ]] || die "TIMEOUT must be a number of seconds, got '$timeout'"
    end=$((SECONDS + timeout))
    next_report=$((SECONDS + 5))
    while :; do
        members="" online="" leader=""
        if json="$(queue_json "$q")"; then
            members="$(queue_field "$json" members 2>/dev/null)" || members=""
            online="$(queue_field "$json" online 2>/dev/null)" || online=""
            leader="$(queue_field "$json" leader 2>/dev/null)" || leader=""
        fi
        # Members that are online, and a leader among them.
        n="$(comm -12 <(sort -u <<<"$members" | sed '/^$/d') <(sort -u <<<"$online" | sed '/^$/d') | wc -l)"
        if [ "$n" -ge "$count" ] && [ -n "$leader" ] && grep -qxF -- "$leader" <<<"$online"; then
            log "queue '$q': $n online member(s), leader $leader"
            printf '%s\n' "$members"
            return 0
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            log "queue '$q': timed out after ${timeout}s with $n online member(s) (members: $(echo "$members" | tr '\n' ' ')online: $(echo "$online" | tr '\n' ' ')leader: ${leader:-none})"
            return 1
        fi
        if [ "$SECONDS" -ge "$next_report" ]; then
            log "queue '$q': $n of $count member(s) online (leader ${leader:-none}); waiting"
            next_report=$((SECONDS + 5))
        fi
        sleep 1
    done
}

# ------------------------------------------------------------ main

cmd="${1:-}"
[ $# -eq 0 ] || shift
case "$cmd" in
    start)
        [ $# -eq 0 ] || die "start takes no arguments"
        cmd_start
        ;;
    stop) cmd_stop "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    leader) cmd_leader "$@" ;;
    members) cmd_members "$@" ;;
    wait-members) cmd_wait_members "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2 && exit 2 ;;
    *) die "unknown command '$cmd' (see --help)" ;;
esac
