#!/usr/bin/env bash
# A real one-node SLURM on this machine, for tests/test_slurm.py (issue #12) and for trying the SLURM
# kernel specs by hand:  bash .ci/slurm.sh   (then: sinfo, srun hostname, sbatch ...)
#
# 1. Installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing (needs root
#    and apt-get; --no-install-recommends: slurm-wlm's recommends are ~30 plugin/dev packages).
# 2. Writes /etc/slurm/slurm.conf for one node named after this host, with the CPUs
#    and memory `slurmd -C` finds here. A slurm.conf this script did not write is never replaced: if
#    the site's SLURM answers, it is used as it is; if not, the script stops and says so.
# 3. Starts munged, slurmctld and slurmd without systemd (CI containers have none) and waits until
#    the node is idle. When they already run and the node answers, it does nothing (well under 1 s).
#
# Choices, and why:
# * auth/munge, as on real clusters (munge's key is the one the Debian package generated).
# * The daemons run as root (SlurmUser=root) and jobs run as the user who submits them: root in CI,
#   so a job writes the test's temporary project directory with the same owner as the test process.
#   Nothing here needs a created user; a non-root user submitting works as on any cluster.
# * SelectType=select/cons_tres with CR_Core and OverSubscribe=FORCE:4: on a 2-core CI machine the
#   trainer job, a kernel under srun and two dask-jobqueue workers must run at the same time, so each
#   core may be given to up to four jobs. Memory is not a consumable resource (CR_Core, not
#   CR_Core_Memory) but --mem above the node's RealMemory is still refused, as on a cluster.
# * proctrack/linuxproc and task/none: containers seldom allow the cgroup plugins; a job's processes
#   are still tracked (and scancel ends them) through their parent process ids.
# * No GPU GRES: slurmd drops a "gpu" GRES without a device file, and a fake device would only pretend.
#   The tests install the kernel specs with site-style --srun-args (as kernels/README.md tells an
#   admin to) that ask for CPUs and memory instead of --gres=gpu:1.
# * Partition "debug" (the default), MaxTime 1 hour; state in /var/spool/slurmctld, logs in
#   /var/log/slurm/{slurmctld,slurmd}.log (read them when a job does not start).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by al_annotator .ci/slurm.sh"
LOG_DIR=/var/log/slurm

say() { echo "slurm.sh: $*" >&2; }
running() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ]; }  # (any user can tell)
ours() { [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; }
node_up() {  # the controller answers and a node takes jobs (with our conf: our two daemons run, too;
             # the controller notices a dead slurmd only SlurmdTimeout later)
  if ours && ! { running /run/slurmctld.pid && running /run/slurmd.pid; }; then return 1; fi
  timeout 5 sinfo -h -N -o "%T" 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

if command -v sinfo >/dev/null && node_up; then
  exit 0  # already up (ours or the site's): nothing to do
fi

if [ "$(id -u)" != 0 ]; then
  say "SLURM is not running and starting it needs root (apt-get, the daemons); run this as root"
  exit 2
fi

need=""
for pkg in slurmctld slurmd slurm-client munge; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
  command -v apt-get >/dev/null || { say "missing$need and no apt-get to install them"; exit 2; }
  say "installing$need"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

if [ -f "$CONF" ] && ! ours; then
  say "$CONF exists and was not written by this script, but SLURM does not answer (sinfo);" \
      "start the site's daemons, or move $CONF aside to let this script write a one-node test cluster"
  exit 3
fi

host="$(hostname -s)"
# CPUs=... Boards=... SocketsPerBoard=... CoresPerSocket=... ThreadsPerCore=... RealMemory=... as found here
hw="$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')"
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
cat > "$CONF.new" <<EOF
$MARK (a one-node test cluster; see that script)
ClusterName=al-annotator-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=01:00:00 OverSubscribe=FORCE:4 State=UP
EOF
if cmp -s "$CONF.new" "$CONF"; then
  rm "$CONF.new"
else  # a new or changed configuration: daemons of ours still running on the old one are restarted
  mv "$CONF.new" "$CONF"
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null && sleep 1
    rm -f "$pidfile"
  done
fi

# munged: as the munge user, as Debian's service does
if ! pgrep -x munged >/dev/null; then
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || { say "munged does not answer (see /var/log/munge/munged.log)"; exit 4; }

running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd
for i in $(seq 60); do
  node_up && { say "up: $(sinfo -h -N -o '%N %T cpus=%c mem=%mMB')"; exit 0; }
  if [ "$i" = 10 ]; then  # a node refused (inval/down), e.g. by a controller still on an older conf
    scontrol reconfigure 2>/dev/null || true
    scontrol update nodename="$host" state=resume 2>/dev/null || true
  fi
  sleep 0.5
done
say "the node did not become idle within 30 s: $(sinfo -h -N -o '%N %T %E' 2>&1 || true);" \
    "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
exit 5
