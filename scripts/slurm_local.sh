#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for the sweep tests, from Debian's packages
# (slurmctld, slurmd, slurm-client). Settings that work on a plain machine: no munge
# (auth/none, cred/none), process tracking without cgroups, non-default ports, every file
# under one folder.
#
#   scripts/slurm_local.sh start [DIR]   # default DIR /tmp/runner-slurm; prints SLURM_CONF=...
#   scripts/slurm_local.sh stop [DIR]
#
# Clients (sbatch, squeue) find the cluster through SLURM_CONF=DIR/slurm.conf.
set -euo pipefail
action=${1:?start or stop}
dir=${2:-/tmp/runner-slurm}
conf="$dir/slurm.conf"

stop() {
    for pid in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
        [[ -f $pid ]] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    sleep 1
}

case $action in
stop) stop ;;
start)
    command -v slurmctld >/dev/null || { echo "slurmctld not found: apt-get install slurmctld slurmd slurm-client" >&2; exit 1; }
    stop
    mkdir -p "$dir/state" "$dir/spool"
    host=$(hostname -s)
    cat >"$conf" <<CONF
ClusterName=runner
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=17817
SlurmdPort=17818
SlurmUser=$(id -un)
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    slurmd -f "$conf"
    for _ in $(seq 30); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            echo "SLURM_CONF=$conf"
            exit 0
        fi
        sleep 1
    done
    echo "the local Slurm cluster did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
    exit 1
    ;;
*) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
