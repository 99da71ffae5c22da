#!/usr/bin/env bash
# A one-node SLURM (slurmctld + slurmd + munge) on this machine, for tests and for trying
# `kind = "slurm"` without a real cluster.
#
#   deploy/slurm/local-cluster.sh start    # install (apt) if needed, configure, start, wait for the node
#   deploy/slurm/local-cluster.sh status   # what runs, sinfo
#   deploy/slurm/local-cluster.sh stop     # stop slurmd, slurmctld and the munged we started
#   deploy/slurm/local-cluster.sh env      # print `export SLURM_CONF=...`
#
# Needs root (slurmd runs jobs as their user) and Debian/Ubuntu apt for the install
# (`slurm-wlm` and `munge`; nothing is installed when `slurmctld`, `slurmd` and `munged`
# are already there). The node takes this machine's host name, CPU count and memory (less
# a margin); partition `debug` (default, no time limit); select/cons_tres with
# CR_CPU_Memory, so two one-CPU jobs run at once on two CPUs. Configuration, state,
# spool and logs live under $NTKSCALE_SLURM_DIR (default /tmp/ntkscale-slurm). SLURM
# commands find the configuration through SLURM_CONF=$NTKSCALE_SLURM_DIR/slurm.conf
# (`eval "$(deploy/slurm/local-cluster.sh env)"`); when /etc/slurm/slurm.conf does not
# exist, `start` also links it there (and `stop` removes only that link), so plain
# `sbatch`/`sinfo` work too. `start` is a no-op when the node already answers; `stop`
# leaves nothing of ours running. Exit status non-zero with the reason when it cannot.
set -Eeuo pipefail

DIR="${NTKSCALE_SLURM_DIR:-/tmp/ntkscale-slurm}"
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
MARK="# written by ntkscale deploy/slurm/local-cluster.sh"
WAIT="${NTKSCALE_SLURM_WAIT:-60}"   # seconds to wait for the node to become idle
export SLURM_CONF="$CONF"

say() { echo "local-cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_up() {  # the controller answers and our node is usable
  local s
  s="$(timeout 10 sinfo -h -N -n "$(hostname -s)" -o '%t' 2>/dev/null | head -n1)" || return 1
  case "$s" in idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v munged >/dev/null || missing+=(munge)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "SLURM is not installed (${missing[*]} missing) and this is not root: run as root or apt-get install slurm-wlm munge"
  command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is not available: install slurm-wlm and munge yourself"
  say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
  local log="$DIR/log/apt.log"
  export DEBIAN_FRONTEND=noninteractive
  # Do not let package scripts start services (no systemd here; we start the daemons ourselves).
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
  local ok=0
  if apt-get update -q >"$log" 2>&1 &&
     apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$log" 2>&1; then ok=1; fi
  [ "$made_policy" = 1 ] && rm -f "$policy"
  [ "$ok" = 1 ] || die "apt-get install slurm-wlm munge failed (last lines of $log below)
$(tail -n 5 "$log")"
  say "installed: $(slurmctld -V 2>/dev/null || echo '?')"
}

start_munge() {
  local key=/etc/munge/munge.key sock_dir=/run/munge
  if [ ! -s "$key" ]; then
    say "creating munge key $key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key"
    else dd if=/dev/urandom bs=1 count=1024 of="$key" 2>/dev/null; fi
  fi
  chown munge:munge "$key" 2>/dev/null || true
  chmod 400 "$key"
  mkdir -p "$sock_dir" /var/lib/munge /var/log/munge
  chown munge:munge "$sock_dir" /var/lib/munge /var/log/munge 2>/dev/null || true
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged already answers
  say "starting munged"
  local pidf="$sock_dir/ntkscale-munged.pid"
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file="$pidf" || die "munged did not start (see /var/log/munge/munged.log)"
  else
    munged --force --pid-file="$pidf" || die "munged did not start (see /var/log/munge/munged.log)"
  fi
  cp "$pidf" "$DIR/munged.pid.ours" 2>/dev/null || true  # `stop` stops only a munged we started
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

write_conf() {
  local host cpus mem_kb mem_mb margin topo
  host="$(hostname -s)"
  cpus="$(nproc --all)"
  mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  mem_mb=$((mem_kb / 1024))
  margin=$((mem_mb / 10)); [ "$margin" -lt 512 ] && margin=512
  # Sockets/cores/threads as slurmd sees them (a mismatch would drain the node).
  topo="$(slurmd -C 2>/dev/null | head -n1 | grep -o 'Boards=.*ThreadsPerCore=[0-9]*' || true)"
  [ -n "$topo" ] || topo="CPUs=$cpus"
  mkdir -p "$DIR"/{state,spool,log}
  cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=ntkscale-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
OverTimeLimit=0
MessageTimeout=10
NodeName=$host $topo RealMemory=$((mem_mb - margin)) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  if [ ! -e "$ETC_CONF" ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$CONF" "$ETC_CONF" && say "linked $ETC_CONF -> $CONF"
  fi
}

start() {
  mkdir -p "$DIR/log"
  if [ -s "$CONF" ] && pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && node_up; then
    say "already running (SLURM_CONF=$CONF)"
    return 0
  fi
  local t0=$SECONDS
  install_packages
  start_munge
  write_conf
  if ! pid_alive "$DIR/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  fi
  if ! pid_alive "$DIR/slurmd.pid"; then
    say "starting slurmd"
    slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  fi
  local i
  for ((i = 0; i < WAIT * 2; i++)); do
    if node_up; then
      say "up in $((SECONDS - t0)) s: $(sinfo -h -N -o '%N %t cpus=%c mem=%mMB partition=%P')"
      say "use it with: export SLURM_CONF=$CONF"
      return 0
    fi
    # A node drained by an earlier run (e.g. a failed slurmd) comes back on request.
    if [ $((i % 10)) = 9 ]; then scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true; fi
    sleep 0.5
  done
  die "the node did not become idle within ${WAIT}s: $(sinfo -h -N -o '%N %t %E' 2>&1 | head -n3); logs in $DIR/log"
}

stop_pidfile() {  # stop_pidfile NAME FILE: TERM, wait, KILL the pid in FILE
  local name="$1" file="$2" pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid="$(cat "$file")"
  say "stopping $name ($pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  if [ -s "$CONF" ] && pid_alive "$DIR/slurmctld.pid"; then
    scancel --state=PENDING,RUNNING -u "$(id -un)" >/dev/null 2>&1 || true  # our test jobs
  fi
  stop_pidfile slurmd "$DIR/slurmd.pid"
  stop_pidfile slurmctld "$DIR/slurmctld.pid"
  [ -s "$DIR/munged.pid.ours" ] && { cp "$DIR/munged.pid.ours" "$DIR/munged.stop"; stop_pidfile munged "$DIR/munged.stop"; rm -f "$DIR/munged.pid.ours"; }
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
  say "stopped (state and logs kept in $DIR)"
}

status() {
  local rc=0
  for d in slurmctld slurmd; do
    if pid_alive "$DIR/$d.pid"; then echo "$d: running ($(cat "$DIR/$d.pid"))"; else echo "$d: not running"; rc=3; fi
  done
  if [ -s "$CONF" ] && command -v sinfo >/dev/null; then timeout 10 sinfo -N 2>&1 || rc=3; fi
  echo "SLURM_CONF=$CONF"
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
