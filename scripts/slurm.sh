#!/usr/bin/env bash
# Install (if needed) and start a single-node Slurm for sweeper's Slurm tests, as CI does:
#
#   sudo bash scripts/slurm.sh        # or: make slurm
#
# Debian's slurmctld, slurmd, slurm-client and munge (Slurm 22.05), configured for this one
# machine: two fake GPUs declared as generic resources (ordinary files stand in for the
# devices), a low-priority default partition `batch` whose tasks a job in the high-priority
# partition `urgent` preempts (SIGTERM to every process of the task, SIGKILL after GraceTime,
# then Slurm requeues it), and no cgroups, systemd or accounting. Daemons run as root on
# 127.0.0.1 with their state, spool and logs under $SLURM_DIR (/tmp/sweeper-slurm).
#
# Idempotent: installs only what is missing, writes the configuration, and starts only the
# daemons that are not running. Every daemon is started with stdin, stdout and stderr away
# from the caller (a daemon that inherited a pipe would keep `$(...)` or CI waiting forever),
# and every wait has a timeout. Stop it with `bash scripts/slurm.sh stop`.
set -euo pipefail

SLURM_DIR=${SLURM_DIR:-/tmp/sweeper-slurm}
CONF_DIR=/etc/slurm
WAIT_SECONDS=60
NODE=$(hostname -s)

log() { printf '[slurm.sh] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    for f in "$SLURM_DIR"/slurmctld.log "$SLURM_DIR"/slurmd.log; do
        [[ -r "$f" ]] && { log "last lines of $f:"; tail -n 20 "$f" >&2; }
    done
    exit 1
}

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [[ "${1:-}" == "stop" ]]; then
    for name in slurmd slurmctld munged; do
        pidfile="$SLURM_DIR/$name.pid"
        if pid_alive "$pidfile"; then
            log "stopping $name (pid $(cat "$pidfile"))"
            kill "$(cat "$pidfile")"
        fi
    done
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "run this script as root: it installs packages and starts daemons as root"

# --- 1. install --------------------------------------------------------------------------------
mkdir -p "$SLURM_DIR"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge from Debian packages"
    # apt's output goes to a file, not to the caller: a daemon a postinst script might start
    # must not hold the caller's stdout or stderr open.
    if ! { timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq slurmctld slurmd slurm-client munge; } \
        </dev/null >"$SLURM_DIR/apt.log" 2>&1; then
        tail -n 30 "$SLURM_DIR/apt.log" >&2
        die "installing Slurm failed (log: $SLURM_DIR/apt.log)"
    fi
fi

# --- 2. configuration --------------------------------------------------------------------------
mkdir -p "$SLURM_DIR"/state "$SLURM_DIR"/spool "$CONF_DIR"
# The fake GPUs: slurmd wants a character device to name for each (it sets no
# CUDA_VISIBLE_DEVICES for a plain file), so each is a node of /dev/null's kind (1, 3).
for i in 0 1; do
    [[ -c "$SLURM_DIR/gpu$i" ]] || { rm -f "$SLURM_DIR/gpu$i"; mknod "$SLURM_DIR/gpu$i" c 1 3; }
done
cpus=$(nproc)
# Memory is not a consumable resource here (CR_CPU), but a task asking for more than the
# node's RealMemory is refused: declare most of what the machine has.
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

cat >"$CONF_DIR/slurm.conf.new" <<EOF
# Written by sweeper's scripts/slurm.sh: a single-node Slurm for tests.
ClusterName=sweeper
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${SLURM_DIR}/state
SlurmdSpoolDir=${SLURM_DIR}/spool
SlurmctldPidFile=${SLURM_DIR}/slurmctld.pid
SlurmdPidFile=${SLURM_DIR}/slurmd.pid
SlurmctldLogFile=${SLURM_DIR}/slurmctld.log
SlurmdLogFile=${SLURM_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
GresTypes=gpu
# Preemption: a job in \`urgent\` requeues the tasks of \`batch\` it needs the resources of.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
# SIGTERM, then SIGKILL after KillWait (scancel, time limit) or GraceTime (preemption).
KillWait=60
# Finished jobs stay visible to scontrol and squeue for 10 minutes.
MinJobAge=600
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} Gres=gpu:2 State=UNKNOWN
PartitionName=batch Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=60
PartitionName=urgent Nodes=${NODE} Default=NO MaxTime=INFINITE State=UP PriorityTier=10
EOF
cat >"$CONF_DIR/gres.conf.new" <<EOF
NodeName=${NODE} Name=gpu File=${SLURM_DIR}/gpu[0-1]
EOF
changed=0
for f in slurm.conf gres.conf; do
    if ! cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then
        mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"
        changed=1
    else
        rm -f "$CONF_DIR/$f.new"
    fi
done

# --- 3. munge ----------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --force </dev/null >&2
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! timeout 5 munge -n </dev/null >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid </dev/null >/dev/null 2>&1 \
        || die "munged did not start"
    ln -sf /run/munge/munged.pid "$SLURM_DIR/munged.pid"
fi
for ((i = 0; i < 10; i++)); do
    timeout 5 munge -n </dev/null >/dev/null 2>&1 && break
    sleep 1
done
timeout 5 munge -n </dev/null >/dev/null 2>&1 || die "munge does not answer"

# --- 4. slurmctld and slurmd -------------------------------------------------------------------
if pid_alive "$SLURM_DIR/slurmctld.pid"; then
    if ((changed)); then
        log "configuration changed: scontrol reconfigure"
        timeout 30 scontrol reconfigure </dev/null >&2 || die "scontrol reconfigure failed"
    fi
else
    log "starting slurmctld"
    slurmctld </dev/null >>"$SLURM_DIR/slurmctld.out" 2>&1 || die "slurmctld did not start"
fi
for ((i = 0; i < WAIT_SECONDS; i++)); do
    timeout 5 scontrol ping </dev/null 2>/dev/null | grep -q UP && break
    sleep 1
done
timeout 5 scontrol ping </dev/null 2>/dev/null | grep -q UP || die "slurmctld does not answer"

if ! pid_alive "$SLURM_DIR/slurmd.pid"; then
    log "starting slurmd (node ${NODE})"
    slurmd -N "$NODE" </dev/null >>"$SLURM_DIR/slurmd.out" 2>&1 || die "slurmd did not start"
fi

state=""
for ((i = 0; i < WAIT_SECONDS; i++)); do
    state=$(timeout 5 sinfo -h -n "$NODE" -o '%T' </dev/null 2>/dev/null | head -n 1 || true)
    case "$state" in
    idle* | mixed* | allocated*) break ;;
    down* | drain*)
        timeout 5 scontrol update NodeName="$NODE" State=RESUME </dev/null >/dev/null 2>&1 || true
        ;;
    esac
    sleep 1
done
case "$state" in
idle* | mixed* | allocated*) ;;
*) die "node ${NODE} is not up after ${WAIT_SECONDS}s (state '${state}')" ;;
esac
log "ready: node ${NODE} ${state}, ${cpus} CPUs, gres gpu:2, partitions batch (default) and urgent (preempts batch)"
