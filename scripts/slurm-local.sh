#!/usr/bin/env bash
# A small Slurm cluster on this machine, for tests and CI: $SLURM_LOCAL_NODES nodes
# (default 3) named n1, n2, ..., each its own slurmd on its own port, with job
# accounting (slurmdbd over a local MariaDB, so sacct reports each step's memory
# and CPU) unless SLURM_LOCAL_ACCOUNTING=0.
#   scripts/slurm-local.sh start|stop|status
# Installs Debian's slurmctld, slurmd, slurm-client, munge, slurmdbd and
# mariadb-server if missing, writes a munge key, slurm.conf and slurmdbd.conf,
# starts the daemons and waits for the nodes.
# Every node has this host's name, so `hostname` is the same on each; jobs tell
# them apart by SLURMD_NODENAME. `start` restarts the daemons if the
# configuration it writes differs from the one they run.
set -euo pipefail

ROOT=${SLURM_LOCAL_DIR:-/var/lib/slurm-local}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
NODES=${SLURM_LOCAL_NODES:-3}
ACCOUNTING=${SLURM_LOCAL_ACCOUNTING:-1}
DBD_CONF=/etc/slurm/slurmdbd.conf
DBD_PORT=6830  # not 6819, Slurm's default: the nodes' slurmds take 6818 + i

install_packages() {
    local want="slurmctld slurmd slurm-client munge"
    [[ $ACCOUNTING == 1 ]] && want+=" slurmdbd mariadb-server"
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null \
        && { [[ $ACCOUNTING != 1 ]] || { command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; }; }; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $want >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $want >/dev/null; }
}

start_accounting() {
    # MariaDB for slurmdbd: started by hand (no systemd here), on its socket only.
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! pgrep -x mariadbd >/dev/null; then
        (mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
            --log-error="$ROOT/log/mariadb.log" >/dev/null 2>&1 &)
    fi
    for _ in $(seq 1 60); do mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.5; done
    if [[ ${RESET_ACCOUNTING:-0} == 1 ]]; then
        # A fresh cluster numbers its jobs from 1 again: the old records would answer for them.
        pkill -x slurmdbd || true
        mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;"
    fi
    # slurmdbd runs as root here, as the other daemons do; MariaDB knows root by its socket.
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
    cat > "$DBD_CONF.new" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=$ROOT/log/slurmdbd.log
PidFile=$ROOT/slurmdbd.pid
CONF
    chmod 0600 "$DBD_CONF.new"
    if ! cmp -s "$DBD_CONF.new" "$DBD_CONF"; then
        pkill -x slurmdbd || true
        mv "$DBD_CONF.new" "$DBD_CONF"
    else
        rm -f "$DBD_CONF.new"
    fi
    pgrep -x slurmdbd >/dev/null || slurmdbd
    for _ in $(seq 1 60); do sacctmgr -n -P list cluster >/dev/null 2>&1 && break; sleep 0.5; done
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx torclocal; then
        sacctmgr -i add cluster torclocal >/dev/null
    fi
}

write_config() {
    local cpus mem_mb nodes_conf i
    # Advertise more CPUs than the machine has so that several small allocations
    # run at once on a test box (config_overrides lets slurmd accept it).
    cpus=$(( $(nproc) * ${SLURM_LOCAL_CPU_FACTOR:-4} ))
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 / NODES ))
    mkdir -p "$ROOT"/{state,spool,log} /etc/slurm /etc/munge /var/log/munge /run/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    # munged runs as root here (as slurmctld and slurmd do): the key and its dirs are root's.
    chown -R root:root /etc/munge /var/log/munge /run/munge /var/lib/munge
    chmod 0700 /etc/munge /var/log/munge /var/lib/munge && chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    if [[ $ACCOUNTING == 1 ]]; then
        # Each step's peak memory and CPU, sampled every second, kept by slurmdbd for sacct.
        ACCOUNTING_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1"
    else
        ACCOUNTING_CONF="JobAcctGatherType=jobacct_gather/none"
    fi
    nodes_conf=""
    for i in $(seq 1 "$NODES"); do
        nodes_conf+="NodeName=n$i NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((6817 + i)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"$'\n'
    done
    cat > "$CONF.new" <<CONF
ClusterName=torclocal
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
${ACCOUNTING_CONF}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/%n
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.%n.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.%n.log
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
${nodes_conf}PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    for i in $(seq 1 "$NODES"); do mkdir -p "$ROOT/spool/n$i"; done
    if ! cmp -s "$CONF.new" "$CONF"; then
        stop  # daemons running another configuration (an older one-node cluster) start afresh
        rm -rf "${ROOT:?}/state" && mkdir -p "$ROOT/state"  # its jobs and nodes are the old cluster's
        RESET_ACCOUNTING=1
        mv "$CONF.new" "$CONF"
    else
        rm -f "$CONF.new"
    fi
}

start() {
    install_packages
    write_config
    pgrep -x munged >/dev/null || /usr/sbin/munged --force
    [[ $ACCOUNTING == 1 ]] && start_accounting
    pgrep -x slurmctld >/dev/null || slurmctld
    for i in $(seq 1 "$NODES"); do
        pgrep -f "^slurmd -N n$i\$" >/dev/null || slurmd -N "n$i"
    done
    for _ in $(seq 1 120); do
        local up=0 node state
        for i in $(seq 1 "$NODES"); do
            node=n$i
            state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
            case "$state" in
                idle*|mixed*|allocated*) up=$((up + 1)) ;;
                down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
            esac
        done
        if [[ $up -eq $NODES ]]; then
            echo "slurm-local: $NODES nodes up"; sinfo -N -o '%N %T %c %m'; return 0
        fi
        sleep 1
    done
    echo "slurm-local: the nodes did not become idle; see $ROOT/log" >&2
    tail -n 20 "$ROOT"/log/*.log >&2 || true
    return 1
}

stop() {
    local name
    for name in slurmd slurmctld slurmdbd munged; do
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
