#!/usr/bin/env bash
# A real one-node SLURM on 127.0.0.1, for tests/test_slurm.py (run as root, on Debian).
#
#   bash .ci/slurm.sh            install (first time) and start: munge, MariaDB, slurmdbd, slurmctld, slurmd
#   bash .ci/slurm.sh accounting on|off
#                                restart slurmctld with accounting (slurmdbd) or without it, keeping its jobs
#   bash .ci/slurm.sh stop       stop the daemons this script started (by their pid files)
#
# Debian's slurm-wlm, munge, slurmdbd and mariadb-server from apt; about 100-200 s the first time.
# The node has 2 CPUs (CR_Core: a job holds the cores it asks for), the machine's memory less 1 GiB,
# no GPUs, proctrack/linuxproc and task/none (no cgroups in a container). Logs: /var/log/slurm/.
set -euo pipefail

CLUSTER=nevisci
CONF=/etc/slurm
DB_PASS=nevisci-slurm
LOGS=/var/log/slurm

need_root() {
    if [ "$(id -u)" != 0 ]; then echo "error: .ci/slurm.sh must run as root (it installs and starts daemons)" >&2; exit 2; fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
}

write_slurm_conf() {  # $1: accounting_storage/slurmdbd or accounting_storage/none
    local memory
    memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd "$LOGS"
    cat > "$CONF/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
AccountingStorageType=$1
AccountingStorageHost=localhost
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

running() {  # $1: a pid file, $2: the daemon's name; true when that daemon runs with that pid
    [ -f "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]
}

start_munge() {
    if running /run/munge/munged.pid munged; then return; fi
    mkdir -p /run/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0700 /etc/munge
    runuser -u munge -- /usr/sbin/munged
}

start_mariadb() {
    if mysqladmin ping >/dev/null 2>&1; then return; fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (setsid mysqld_safe >/dev/null 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
    mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    if running /run/slurmdbd.pid slurmdbd; then return; fi
    cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
    chmod 600 "$CONF/slurmdbd.conf"
    slurmdbd
    for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
}

stop_pid() {  # $1: a pid file of a daemon this script started, $2: its name
    if running "$1" "$2"; then
        local pid
        pid=$(cat "$1")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$1"
}

start_slurm() {  # $1: accounting_storage/slurmdbd or accounting_storage/none
    write_slurm_conf "$1"
    stop_pid /run/slurmctld.pid slurmctld
    slurmctld
    if ! running /run/slurmd.pid slurmd; then
        slurmd -N localhost
    fi
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then return; fi
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "error: SLURM did not come up; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
    sinfo >&2 || true
    exit 1
}

need_root
case "${1:-start}" in
    start)
        install
        start_munge
        start_mariadb
        start_slurmdbd
        start_slurm accounting_storage/slurmdbd
        echo "SLURM up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
        ;;
    accounting)
        case "${2:-}" in
            on) start_slurmdbd; start_slurm accounting_storage/slurmdbd ;;
            off) start_slurm accounting_storage/none ;;
            *) echo "error: usage: .ci/slurm.sh accounting on|off" >&2; exit 2 ;;
        esac
        ;;
    stop)
        stop_pid /run/slurmd.pid slurmd
        stop_pid /run/slurmctld.pid slurmctld
        stop_pid /run/slurmdbd.pid slurmdbd
        ;;
    *) echo "error: unknown command '$1'; valid: start, accounting on|off, stop" >&2; exit 2 ;;
esac
