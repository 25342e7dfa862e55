#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and CI.
#   scripts/slurm-local.sh start|stop|status
# Installs Debian's slurmctld, slurmd, slurm-client and munge if missing,
# writes a munge key and slurm.conf, starts the daemons and waits for the node.
set -euo pipefail

ROOT=${SLURM_LOCAL_DIR:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local cpus mem_mb
    # Advertise more CPUs than the machine has so that several small allocations
    # run at once on a test box (config_overrides lets slurmd accept it).
    cpus=$(( $(nproc) * ${SLURM_LOCAL_CPU_FACTOR:-4} ))
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
    mkdir -p "$ROOT"/{state,spool,log} /etc/slurm /etc/munge /var/log/munge /run/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    # munged runs as root here (as slurmctld and slurmd do): the key and its dirs are root's.
    chown -R root:root /etc/munge /var/log/munge /run/munge /var/lib/munge
    chmod 0700 /etc/munge /var/log/munge /var/lib/munge && chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    cat > "$CONF" <<CONF
ClusterName=torclocal
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start() {
    install_packages
    write_config
    pgrep -x munged >/dev/null || /usr/sbin/munged --force
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 1 120); do
        state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) echo "slurm-local: node $HOST is $state"; return 0 ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    echo "slurm-local: node $HOST did not become idle; see $ROOT/log" >&2
    tail -n 20 "$ROOT"/log/*.log >&2 || true
    return 1
}

stop() {
    local name
    for name in slurmd slurmctld munged; do
        pkill -x "$name" || true
        for _ in $(seq 1 50); do pgrep -x "$name" >/dev/null || break; sleep 0.1; done
    done
}

status() {
    if command -v sinfo >/dev/null && sinfo -h -o '%P %T %D %C' 2>/dev/null; then
        return 0
    fi
    echo "slurm-local: not running"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
