#!/usr/bin/env bash
# A private single-node Slurm cluster on this machine, for the tests and CI (Debian 12, run as root; no
# systemd or cgroups needed). Every file lives under DIR (default /tmp/harness-slurm); clients find the
# cluster through SLURM_CONF, which `start` prints as its last line on stdout. No accounting (no slurmdbd),
# so sacct fails; finished jobs stay visible to squeue/scontrol for MinJobAge (10 minutes).
#   bash scripts/slurm.sh install          # Debian's slurmctld, slurmd, slurm-client and munge (idempotent)
#   bash scripts/slurm.sh start [DIR]      # start it (idempotent); last stdout line: export SLURM_CONF=DIR/slurm.conf
#   bash scripts/slurm.sh stop [DIR]       # cancel its jobs and stop its daemons by their pid files
#   bash scripts/slurm.sh status [DIR]     # exit 0 when it is up and its node is usable
#   eval "$(bash scripts/slurm.sh start)"  # start it and point this shell's clients at it
# It listens on the standard ports 6817 (slurmctld) and 6818 (slurmd): one cluster per machine at a time.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(slurmctld slurmd slurm-client munge)
CTLD_PORT=6817
SLURMD_PORT=6818

log() { echo "slurm.sh: $*" >&2; }

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------------- install

installed() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] || return 1
    done
}

cmd_install() {
    if ! installed; then
        [[ "$(id -u)" == 0 ]] || { log "installing needs root"; exit 1; }
        # keep the packages' init scripts from starting daemons with the default paths; a policy that is
        # already there (Docker images ship one) is left as it is
        local policy=/usr/sbin/policy-rc.d
        if [[ ! -e "$policy" ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 0755 "$policy"
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        # update the package lists only when apt cannot see the packages, or when the install fails on stale ones
        apt-cache show "${PACKAGES[@]}" >/dev/null 2>&1 || apt-get update -qq
        local install=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}")
        "${install[@]}" >/dev/null || { apt-get update -qq && "${install[@]}" >/dev/null; }
    fi
    echo "$(slurmctld -V) ($(dpkg-query -W -f='munge ${Version}' munge))"
}

# ---------------------------------------------------------------------------------------------------- paths

set_paths() {
    DIR="$(realpath -m "${1:-/tmp/harness-slurm}")"
    CONF="$DIR/slurm.conf"
    MUNGE_DIR="$DIR/munge"
    MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
    MUNGE_KEY="$MUNGE_DIR/munge.key"
    LOGS="$DIR/log"
    RUN="$DIR/run"
    STATE="$DIR/state"
    SPOOL="$DIR/spool"
    # run from inside a Slurm job or allocation elsewhere, its variables would point srun and sbatch at that job
    local var
    for var in $(compgen -e); do [[ "$var" =~ ^(SLURM|SBATCH|SRUN|SALLOC)_ ]] && unset "$var"; done
    export SLURM_CONF="$CONF"
}

pidfile() { echo "$RUN/$1.pid"; }

# The pid in the daemon's pid file, when that process is alive and is this cluster's daemon (its command line
# names this DIR: the daemons are started with -f DIR/slurm.conf or --socket DIR/munge/...); never by name.
daemon_pid() {
    local file pid
    file="$(pidfile "$1")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc 0-9 <"$file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

node_name() { sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF" 2>/dev/null | head -n1; }

# client calls retry for MessageTimeout when slurmctld is gone; bound them
client() { timeout 10 "$@"; }

# ---------------------------------------------------------------------------------------------------- status

# 0 when all three daemons are alive, slurmctld answers and the node can run jobs
is_up() {
    local name state
    for name in munged slurmctld slurmd; do daemon_pid "$name" >/dev/null || return 1; done
    name="$(node_name)"
    [[ -n "$name" ]] || return 1
    state="$(client sinfo -h -n "$name" -o %T 2>/dev/null)" || return 1
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

cmd_status() {
    set_paths "${1:-}"
    if is_up; then
        log "up in $DIR (node $(node_name): $(client sinfo -h -n "$(node_name)" -o %T))"
    else
        log "not up in $DIR"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------------- stop

# SIGTERM the given daemons, wait up to 10 s, then SIGKILL what is left
terminate() {
    local name pid pids=() i
    for name in "$@"; do
        if pid="$(daemon_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 100 && ${#pids[@]}; i++)); do
        local alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        pids=("${alive[@]+"${alive[@]}"}")
        ((${#pids[@]})) && sleep 0.1
    done
    if ((${#pids[@]})); then
        log "still running after 10 s, killing: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for name in "$@"; do rm -f "$(pidfile "$name")"; done
}

stop_cluster() {
    if daemon_pid slurmctld >/dev/null && daemon_pid munged >/dev/null; then
        client scancel --partition=debug >/dev/null 2>&1 || true
        local i
        for ((i = 0; i < 150; i++)); do  # KillWait=5: cancelled jobs are gone within seconds
            [[ -z "$(client squeue -h -o %i 2>/dev/null || echo error)" ]] && break
            sleep 0.2
        done
    fi
    # munged last in the list, but all at once: each daemon takes about 2 s to exit
    terminate slurmd slurmctld munged
}

cmd_stop() {
    set_paths "${1:-}"
    stop_cluster
    log "stopped in $DIR"
}

# ---------------------------------------------------------------------------------------------------- start

# On a failure: the tail of the daemons' logs, then stop whatever was started, and exit non-zero
STARTED=0
fail() {
    local file
    trap - EXIT
    log "error: $1"
    shift
    for file in "$@"; do
        [[ -s "$file" ]] || continue
        echo "----- tail of $file" >&2
        tail -n 25 "$file" >&2
    done
    stop_cluster >/dev/null 2>&1 || true
    exit 1
}

on_exit() {
    local rc=$?
    # set -e stopped start somewhere unexpected: clean up all the same
    if ((rc != 0 && STARTED == 0)); then
        trap - EXIT
        fail "start failed (exit $rc)" "$LOGS"/*.log "$LOGS"/*.out
    fi
}

# wait up to $1 tenths of a second for the command in the other arguments to succeed
wait_for() {
    local tenths=$1 i
    shift
    for ((i = 0; i < tenths; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null; }

# something listens on 127.0.0.1:$1
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait up to 20 s for slurmctld to answer; fail at once when it died (it forks before it binds its port)
wait_for_slurmctld() {
    local i
    for ((i = 0; i < 200; i++)); do
        client scontrol ping >/dev/null 2>&1 && return 0
        if ! daemon_pid slurmctld >/dev/null && { [[ -s "$(pidfile slurmctld)" ]] || ((i >= 20)); }; then
            fail "slurmctld died" "$LOGS/slurmctld.out" "$LOGS/slurmctld.log"
        fi
        sleep 0.1
    done
    fail "slurmctld does not answer on port $CTLD_PORT" "$LOGS/slurmctld.out" "$LOGS/slurmctld.log"
}

write_conf() {
    local node=$1 host=$2
    cat >"$CONF" <<EOF
# A private single-node cluster written by scripts/slurm.sh; clients: export SLURM_CONF=$CONF
ClusterName=harness
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# batch_sched_delay's default holds every sbatch job for up to 3 s
SchedulerParameters=batch_sched_delay=0,sched_interval=5
MailProg=/bin/true
ReturnToService=2
KillWait=5
# no sacct here: keep finished jobs visible to squeue and scontrol for 10 minutes
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

cmd_start() {
    set_paths "${1:-}"
    local t0=$EPOCHREALTIME
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null ||
        { log "error: Slurm is not installed (bash scripts/slurm.sh install)"; exit 1; }

    if is_up; then
        log "already up in $DIR (node $(node_name))"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    # start wipes DIR's state, spool, log and run folders: only in an empty DIR or in one of its own clusters
    if [[ -n "$(ls -A "$DIR" 2>/dev/null)" ]] && ! grep -qF "written by scripts/slurm.sh" "$CONF" 2>/dev/null; then
        log "error: $DIR is not empty and holds no cluster of this script; give an empty or new DIR"
        exit 1
    fi
    # a half-started or crashed cluster in DIR: stop what is left of it, then start afresh
    stop_cluster >/dev/null 2>&1 || true

    # the node as slurmd sees it (first line: NodeName=<host> CPUs=.. RealMemory=..)
    local node host port
    node="$(slurmd -C 2>&1 | head -n1)"
    [[ "$node" == NodeName=* ]] || { log "error: slurmd -C printed no node line: $node"; exit 1; }
    host="${node%% *}"
    host="${host#NodeName=}"
    # slurmstepd's unix sockets, DIR/spool/<host>_<job id>.<step id>, must fit in 107 bytes
    if ((${#DIR} + ${#host} + 29 > 107)); then
        log "error: DIR is too long for slurmstepd's unix sockets (at most $((78 - ${#host})) characters here): $DIR"
        exit 1
    fi
    # munged refuses a socket below a folder that not everyone may enter (pytest's tmp folders are 0700)
    local up="$DIR" mode
    while [[ "$up" != / ]]; do
        up="$(dirname "$up")"
        [[ -d "$up" ]] || continue
        mode="$(stat -c %A "$up")"
        if [[ "${mode:9:1}" != [xt] ]]; then
            log "error: munged needs parent folders that everyone may enter; $up is $mode (chmod o+x, or another DIR)"
            exit 1
        fi
    done
    for port in $CTLD_PORT $SLURMD_PORT; do
        ! port_in_use "$port" ||
            { log "error: port $port is in use (another Slurm cluster here? bash $0 stop ITS_DIR)"; exit 1; }
    done

    trap on_exit EXIT
    # a fresh cluster each time: no jobs or node state carried over; logs from this start only
    umask 022
    rm -rf "$STATE" "$SPOOL" "$LOGS" "$RUN"
    mkdir -p "$DIR" "$MUNGE_DIR" "$LOGS" "$RUN" "$STATE" "$SPOOL"
    chmod 0755 "$DIR" "$MUNGE_DIR"

    write_conf "$node" "$host"

    # munge: a private key and socket
    [[ -s "$MUNGE_KEY" ]] || mungekey -c -b 1024 -k "$MUNGE_KEY"
    chmod 0600 "$MUNGE_KEY"
    munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$(pidfile munged)" \
        --log-file="$LOGS/munged.log" --seed-file="$MUNGE_DIR/munged.seed" </dev/null >"$LOGS/munged.out" 2>&1 ||
        fail "munged did not start" "$LOGS/munged.out" "$LOGS/munged.log"
    wait_for 100 munge_ok || fail "munge does not answer on $MUNGE_SOCKET" "$LOGS/munged.out" "$LOGS/munged.log"

    slurmctld -f "$CONF" </dev/null >"$LOGS/slurmctld.out" 2>&1 ||
        fail "slurmctld did not start" "$LOGS/slurmctld.out" "$LOGS/slurmctld.log"
    wait_for_slurmctld
    slurmd -f "$CONF" -N "$host" </dev/null >"$LOGS/slurmd.out" 2>&1 ||
        fail "slurmd did not start" "$LOGS/slurmd.out" "$LOGS/slurmd.log"

    # ready when the node is idle; resume it once if it registered down or drained
    local i state="" resumed=0
    for ((i = 0; i < 300; i++)); do
        daemon_pid slurmctld >/dev/null || fail "slurmctld died" "$LOGS/slurmctld.out" "$LOGS/slurmctld.log"
        daemon_pid slurmd >/dev/null || { ((i < 20)) || fail "slurmd died" "$LOGS/slurmd.out" "$LOGS/slurmd.log"; }
        state="$(client sinfo -h -n "$host" -o %T 2>/dev/null || true)"
        [[ "$state" == idle ]] && break
        if [[ "$state" =~ ^(down|drain|drained|draining) ]] && ((resumed == 0 && i >= 10)); then
            client scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 0.1
    done
    [[ "$state" == idle ]] ||
        fail "node $host is '$state', not idle, after 30 s" "$LOGS/slurmd.log" "$LOGS/slurmctld.log"
    # sinfo may say idle for a node whose slurmd died: ask slurmd itself
    daemon_pid slurmd >/dev/null && client scontrol show slurmd >/dev/null 2>&1 ||
        fail "slurmd does not answer" "$LOGS/slurmd.out" "$LOGS/slurmd.log"
    # and run one job step end to end
    timeout 60 srun -n1 -t1 true >"$LOGS/probe.out" 2>&1 ||
        fail "the probe job (srun -n1 -t1 true) failed" "$LOGS/probe.out" "$LOGS/slurmctld.log" "$LOGS/slurmd.log"

    STARTED=1
    trap - EXIT
    log "up in $DIR after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s" \
        "(node $host, $(slurmctld -V))"
    echo "export SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------------------------------------------- main

case "${1:-}" in
    install) (($# == 1)) || usage; cmd_install ;;
    start) (($# <= 2)) || usage; cmd_start "${2:-}" ;;
    stop) (($# <= 2)) || usage; cmd_stop "${2:-}" ;;
    status) (($# <= 2)) || usage; cmd_status "${2:-}" ;;
    *) usage ;;
esac
