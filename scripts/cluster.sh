#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N workers, all bound to 127.0.0.1,
# started from the pyspark package installed in the project's venv.
#
#   scripts/cluster.sh up | down | status | kill-worker I
#
# Settings come from the environment (the Makefile passes its CLUSTER_* variables through):
#   CLUSTER_DIR            run directory for pid files, logs and worker scratch space (runs/cluster)
#   CLUSTER_HOST           address every daemon binds to (127.0.0.1)
#   CLUSTER_MASTER_PORT    master RPC port (7077)
#   CLUSTER_WEBUI_PORT     master web UI / JSON status port (8080)
#   CLUSTER_WORKERS        number of workers (2)
#   CLUSTER_WORKER_CORES   cores each worker offers (1)
#   CLUSTER_WORKER_MEMORY  memory each worker offers (2g)
#   CLUSTER_WORKER_WEBUI_PORT  web UI port of worker 1; worker i gets this + i - 1; 0 = any free port (8081)
#   CLUSTER_WORKER_PORT    RPC port of worker 1, worker i gets this + i - 1; 0 = any free port (0)
#   CLUSTER_START_TIMEOUT  seconds to wait for the workers to register (60)
#   CLUSTER_STOP_GRACE     seconds between SIGTERM and SIGKILL on `down` (5)
#   CLUSTER_MASTER_OPTS    -D options for the master (-Dspark.master.rest.enabled=false)
#   CLUSTER_AUTH_SECRET_FILE  a file holding a shared secret: turns on spark.authenticate for every
#                          daemon (via a private spark-defaults.conf, so the secret is not on a command
#                          line); applications need the same secret (docs/cluster.md#security)
#   SPARK_DAEMON_JAVA_OPTS passed through to every daemon
#   PYTHON                 interpreter executors run (.venv/bin/python)
#
# Every daemon runs in its own session (setsid), so its process group also holds the executors and
# Python workers it forks; `down` signals whole groups and checks that nothing of them is left.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="${CLUSTER_DIR:-runs/cluster}"
case "$CLUSTER_DIR" in /*) ;; *) CLUSTER_DIR="$ROOT/$CLUSTER_DIR" ;; esac
CLUSTER_HOST="${CLUSTER_HOST:-127.0.0.1}"
CLUSTER_MASTER_PORT="${CLUSTER_MASTER_PORT:-7077}"
CLUSTER_WEBUI_PORT="${CLUSTER_WEBUI_PORT:-8080}"
CLUSTER_WORKERS="${CLUSTER_WORKERS:-2}"
CLUSTER_WORKER_CORES="${CLUSTER_WORKER_CORES:-1}"
CLUSTER_WORKER_MEMORY="${CLUSTER_WORKER_MEMORY:-2g}"
CLUSTER_WORKER_WEBUI_PORT="${CLUSTER_WORKER_WEBUI_PORT:-8081}"
CLUSTER_WORKER_PORT="${CLUSTER_WORKER_PORT:-0}"
CLUSTER_START_TIMEOUT="${CLUSTER_START_TIMEOUT:-60}"
CLUSTER_STOP_GRACE="${CLUSTER_STOP_GRACE:-5}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
case "$PYTHON" in /*) ;; *) PYTHON="$ROOT/$PYTHON" ;; esac

MASTER_URL="spark://$CLUSTER_HOST:$CLUSTER_MASTER_PORT"
STATUS_URL="http://$CLUSTER_HOST:$CLUSTER_WEBUI_PORT/json/"
PID_DIR="$CLUSTER_DIR/pids"
LOG_DIR="$CLUSTER_DIR/logs"
WORK_DIR="$CLUSTER_DIR/work"

die() { echo "error: $*" >&2; exit 2; }

spark_home() {
    [ -x "$PYTHON" ] || die "$PYTHON not found; run 'make setup' first"
    "$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' \
        || die "pyspark is not installed in $PYTHON; run 'make setup'"
}

# A pid file counts only while its process is alive AND is still our daemon (pids get reused).
alive() {
    local name="$1" pid_file="$PID_DIR/$1.pid" pid
    [ -f "$pid_file" ] || return 1
    pid="$(cat "$pid_file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    # The marker is in the environment from the first instant (spark-class is bash, then execs java).
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx -- "SPARK_COLLAB_DAEMON=$CLUSTER_DIR/$name" || return 1
    echo "$pid"
}

# running PID: the process exists and has not exited (a zombie has). Unlike `alive`, no marker is
# read: while a daemon execs (setsid, then spark-class, then java) the kernel shows its environment
# empty for an instant, and a wait loop that read it then would take a starting master for dead.
running() {
    local state
    state="$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Every process a daemon starts (executors, Python workers, torch ranks) inherits its environment,
# so the marker finds them even if they left the daemon's process group.
# marked_pids NAME: processes of daemon NAME; marked_pids "": processes of any daemon of this cluster.
marked_pids() {
    local match=(-F -- "SPARK_COLLAB_DAEMON=$CLUSTER_DIR/")
    [ -z "$1" ] || match=(-xF -- "SPARK_COLLAB_DAEMON=$CLUSTER_DIR/$1")
    grep -lz "${match[@]}" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx -- "$$" || true
}

# Start one daemon in a new session; its pid is also its process group and session id.
launch() {
    local name="$1"; shift
    local log="$LOG_DIR/$name.out" pid
    # The marker variable lets `alive` recognise the process; Spark ignores it.
    SPARK_COLLAB_DAEMON="$CLUSTER_DIR/$name" setsid "$SPARK_HOME/bin/spark-class" "$@" </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_DIR/$name.pid"
    echo "started $name (pid $pid, log $log)"
}

master_json() {
    "$PYTHON" - "$STATUS_URL" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        print(json.dumps(json.load(response)))
except OSError:
    sys.exit(1)
EOF
}

alive_workers() {
    master_json 2>/dev/null | "$PYTHON" -c \
        'import json,sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
        2>/dev/null || echo 0
}

port_free() {
    "$PYTHON" - "$CLUSTER_HOST" "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
EOF
}

# Daemons read spark-defaults.conf from SPARK_CONF_DIR. Spark's standalone daemons take the secret
# only as spark.authenticate.secret (spark.authenticate.secret.file is for Kubernetes), so it goes
# into this file, readable by its owner only, rather than onto a command line that `ps` shows.
write_daemon_conf() {
    local target="$1"
    rm -f "$target"
    [ -n "${CLUSTER_AUTH_SECRET_FILE:-}" ] || return 0
    [ -r "$CLUSTER_AUTH_SECRET_FILE" ] || die "CLUSTER_AUTH_SECRET_FILE=$CLUSTER_AUTH_SECRET_FILE is not readable"
    (
        umask 077
        printf 'spark.authenticate true\nspark.authenticate.secret %s\n' \
            "$(tr -d '[:space:]' <"$CLUSTER_AUTH_SECRET_FILE")" >"$target"
    )
}

cmd_up() {
    SPARK_HOME="$(spark_home)"
    export SPARK_HOME
    mkdir -p "$PID_DIR" "$LOG_DIR" "$WORK_DIR"
    # Bind every service (RPC, block manager, web UIs, executors) to the loopback address, and make
    # executors run the project's interpreter, which has our dependencies.
    export SPARK_LOCAL_IP="$CLUSTER_HOST" SPARK_LOCAL_HOSTNAME="$CLUSTER_HOST"
    export SPARK_MASTER_HOST="$CLUSTER_HOST"
    export PYSPARK_PYTHON="$PYTHON"
    export SPARK_WORKER_DIR="$WORK_DIR"
    # The master's REST submission gateway (port 6066) accepts unauthenticated submissions; off
    # unless asked for (CLUSTER_MASTER_OPTS='-Dspark.master.rest.enabled=true').
    export SPARK_MASTER_OPTS="${CLUSTER_MASTER_OPTS:--Dspark.master.rest.enabled=false}"
    # Spark's own conf/ dir would be inside site-packages; ours keeps user files out of the venv.
    export SPARK_CONF_DIR="$CLUSTER_DIR/conf"
    mkdir -p "$SPARK_CONF_DIR"
    write_daemon_conf "$SPARK_CONF_DIR/spark-defaults.conf"

    if pid="$(alive master)"; then
        echo "master already running (pid $pid)"
    else
        port_free "$CLUSTER_MASTER_PORT" || die "port $CLUSTER_MASTER_PORT on $CLUSTER_HOST is taken; set CLUSTER_MASTER_PORT"
        port_free "$CLUSTER_WEBUI_PORT" || die "port $CLUSTER_WEBUI_PORT on $CLUSTER_HOST is taken; set CLUSTER_WEBUI_PORT"
        launch master org.apache.spark.deploy.master.Master \
            --host "$CLUSTER_HOST" --port "$CLUSTER_MASTER_PORT" --webui-port "$CLUSTER_WEBUI_PORT"
    fi
    local i name port webui
    for i in $(seq 1 "$CLUSTER_WORKERS"); do
        name="worker-$i"
        if pid="$(alive "$name")"; then
            echo "$name already running (pid $pid)"
            continue
        fi
        webui=0  # 0: any free port
        [ "$CLUSTER_WORKER_WEBUI_PORT" -eq 0 ] || webui=$((CLUSTER_WORKER_WEBUI_PORT + i - 1))
        port=0
        [ "$CLUSTER_WORKER_PORT" -eq 0 ] || port=$((CLUSTER_WORKER_PORT + i - 1))
        mkdir -p "$WORK_DIR/$name"
        launch "$name" org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
            --host "$CLUSTER_HOST" --port "$port" --webui-port "$webui" \
            --cores "$CLUSTER_WORKER_CORES" --memory "$CLUSTER_WORKER_MEMORY" --work-dir "$WORK_DIR/$name"
    done

    # Up means usable: every worker registered with the master.
    local deadline=$((SECONDS + CLUSTER_START_TIMEOUT)) n=0 master_pid
    master_pid="$(cat "$PID_DIR/master.pid")"
    while [ "$SECONDS" -lt "$deadline" ]; do
        n="$(alive_workers)"
        [ "$n" -ge "$CLUSTER_WORKERS" ] && break
        running "$master_pid" || break
        sleep 0.5
    done
    if [ "$n" -lt "$CLUSTER_WORKERS" ]; then
        if running "$master_pid"; then
            echo "error: only $n of $CLUSTER_WORKERS workers registered with $MASTER_URL within ${CLUSTER_START_TIMEOUT}s" >&2
        else
            echo "error: the master (pid $master_pid) exited before $CLUSTER_WORKERS workers registered with $MASTER_URL" >&2
        fi
        for f in "$LOG_DIR"/*.out; do echo "--- $f" >&2; tail -n 15 "$f" >&2; done
        exit 1
    fi
    echo "cluster up: $MASTER_URL with $n workers (status: $STATUS_URL, logs: $LOG_DIR)"
}

# Stop daemons by process group: SIGTERM all of them at once, SIGKILL what is left after a grace
# period (a worker with running executors can take a while), then sweep up anything still carrying
# this cluster's marker. Fails if a process survives.
cmd_down() {
    local name pid f groups=() names=() i left
    for f in "$PID_DIR"/worker-*.pid "$PID_DIR"/master.pid; do
        [ -f "$f" ] || continue
        name="$(basename "$f" .pid)"
        if pid="$(alive "$name")"; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            groups+=("$pid"); names+=("$name")
        fi
    done
    for i in $(seq 1 "$((CLUSTER_STOP_GRACE * 5))"); do
        [ -n "$(pgrep_groups "${groups[@]}")" ] || break
        sleep 0.2
    done
    left="$(pgrep_groups "${groups[@]}")"
    if [ -n "$left" ]; then
        echo "still running after ${CLUSTER_STOP_GRACE}s, sending SIGKILL: $(echo $left)" >&2
        for pid in "${groups[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    fi
    left="$(marked_pids "")"
    [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
    for i in $(seq 1 25); do
        left="$( { pgrep_groups "${groups[@]}"; marked_pids ""; } | sort -u)"
        [ -n "$left" ] || break
        sleep 0.2
    done
    if [ -n "$left" ]; then
        echo "error: cluster processes survived SIGKILL: $(echo $left)" >&2
        exit 1
    fi
    for name in "${names[@]}"; do echo "stopped $name"; done
    rm -f "$PID_DIR"/*.pid
    echo "cluster down"
}

# Live (non-zombie) processes whose process group is one of the arguments; read from /proc so the
# script needs no procps.
pgrep_groups() {
    [ "$#" -gt 0 ] || return 0
    local stat line fields g
    for stat in /proc/[0-9]*/stat; do
        line="$(cat "$stat" 2>/dev/null)" || continue
        # Fields after the command name (which may hold spaces): state ppid pgrp ...
        read -r -a fields <<<"${line##*) }"
        [ "${fields[0]:-Z}" != "Z" ] || continue
        for g in "$@"; do
            if [ "${fields[2]:-}" = "$g" ]; then
                stat="${stat#/proc/}"
                echo "${stat%/stat}"
            fi
        done
    done
}

cmd_status() {
    local name pid f json
    echo "master: $MASTER_URL"
    for f in "$PID_DIR"/master.pid "$PID_DIR"/worker-*.pid; do
        [ -f "$f" ] || continue
        name="$(basename "$f" .pid)"
        if pid="$(alive "$name")"; then echo "  $name: running (pid $pid)"; else echo "  $name: not running"; fi
    done
    if ! json="$(master_json)"; then
        echo "master not reachable at $STATUS_URL; start it with 'make cluster-up'"
        return 3
    fi
    printf '%s' "$json" | "$PYTHON" "$ROOT/scripts/cluster_status.py"
}

# Fault injection for tests and demos: SIGKILL worker I and everything in its process group
# (its executors and their Python workers), as if the machine had died.
cmd_kill_worker() {
    local name="worker-${1:?usage: cluster.sh kill-worker I}" pid
    pid="$(alive "$name")" || die "$name is not running"
    kill -KILL -- "-$pid" $(marked_pids "$name") 2>/dev/null || true
    echo "killed $name (process group $pid)"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    kill-worker) shift; cmd_kill_worker "$@" ;;
    *) echo "usage: $0 up|down|status|kill-worker I" >&2; exit 2 ;;
esac
