#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for testing `kgvlp ablate --executor slurm` against
# a real scheduler (tests/ablation/test_slurm.py starts it through this script).
#
#   sudo tools/slurm_local_cluster.sh start    # install if needed, configure, start; idempotent
#   sudo tools/slurm_local_cluster.sh stop
#   tools/slurm_local_cluster.sh status
#
# Debian/Ubuntu packages: slurmctld slurmd slurm-client munge (installed with apt-get when
# missing, ~15 s; set KGVLP_SLURM_INSTALL=0 to forbid). Runs everything as root:
# SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, no cgroups, no
# accounting (sacct warnings are expected), SelectType=select/cons_tres with cores as the
# consumable resource, one node with this machine's CPUs and memory, one partition "debug".
# Exit status 77 = cannot run here (not root, or not installable): tests skip on it.
set -euo pipefail

ACTION=${1:-start}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
HOST=$(hostname -s)

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm_local_cluster: needs root (slurmd and munged run as root here)" >&2
        exit 77
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    if [ "${KGVLP_SLURM_INSTALL:-1}" != 1 ] || ! command -v apt-get >/dev/null; then
        echo "slurm_local_cluster: slurmctld/slurmd/slurm-client/munge are not installed" >&2
        exit 77
    fi
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
        || { echo "slurm_local_cluster: apt-get install failed" >&2; exit 77; }
}

start_munge() {
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    if ! munge -n </dev/null >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    fi
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && return; sleep 0.1; done
    echo "slurm_local_cluster: munged did not start" >&2
    exit 1
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 256 ))
    mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$CONF.tmp" <<EOF
# Written by kgvlp tools/slurm_local_cluster.sh: one node on localhost, root, no cgroups.
ClusterName=kgvlp-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    # No cgroup.conf: slurmd autodetects a cgroup plugin, and nothing here uses it
    # (22.05 has no CgroupPlugin=disabled).
}

wait_idle() {
    for _ in $(seq 100); do
        state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) echo "slurm_local_cluster: node $HOST $state"; return 0 ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    echo "slurm_local_cluster: node $HOST did not come up (state: ${state:-none}); see /var/log/slurm/" >&2
    exit 1
}

case "$ACTION" in
    start)
        need_root
        install_packages
        start_munge
        if ! pgrep -x slurmctld >/dev/null || ! pgrep -x slurmd >/dev/null; then
            write_conf
            pgrep -x slurmctld >/dev/null || slurmctld -i
            pgrep -x slurmd >/dev/null || slurmd
        fi
        wait_idle
        ;;
    stop)
        need_root
        for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
            [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        ;;
    status)
        sinfo && squeue
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
