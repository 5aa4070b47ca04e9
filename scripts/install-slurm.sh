#!/usr/bin/env bash
# Install what the Slurm executor's tests (tests/slurm) need: Slurm's daemons and client commands
# and munge, from Debian's packages (Debian 12: slurm-wlm 22.05 pulls in slurmctld, slurmd and
# slurm-client). Idempotent: does nothing when they are installed. Never fails the caller: without
# root (or without apt-get) it says what is missing and exits 0, and the Slurm tests skip.
# The tests run their own daemons with their own config: the packages' services, if the machine starts
# them (slurmctld/slurmd fail without /etc/slurm/slurm.conf; munged uses /etc/munge), are not used.
set -euo pipefail

required=(slurmctld slurmd munged sbatch squeue sacct scancel sinfo)
packages=(slurm-wlm munge)

missing=()
for binary in "${required[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-slurm: Slurm and munge are installed ($(slurmd -V 2>/dev/null || echo "version unknown"))"
  exit 0
fi

echo "install-slurm: missing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-slurm: not root, so not installing; as root run: apt-get install ${packages[*]}" \
       "(the Slurm tests skip meanwhile)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-slurm: no apt-get on this machine; install Slurm (slurmctld, slurmd, client commands) and" \
       "munge by hand (the Slurm tests skip meanwhile)"
  exit 0
fi

apt_log=$(mktemp)
trap 'rm -f "$apt_log"' EXIT
echo "install-slurm: apt-get update"
if ! apt-get update -qq >"$apt_log" 2>&1; then
  echo "install-slurm: apt-get update failed (the Slurm tests will skip):"; tail -n 20 "$apt_log"
  exit 0
fi
echo "install-slurm: apt-get install --no-install-recommends ${packages[*]}"
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" \
     >"$apt_log" 2>&1; then
  echo "install-slurm: apt-get install failed (the Slurm tests will skip):"; tail -n 20 "$apt_log"
  exit 0
fi

for binary in "${required[@]}"; do
  if ! command -v "$binary" >/dev/null 2>&1; then
    echo "install-slurm: $binary is still missing after installing ${packages[*]} (the Slurm tests will skip)"
    exit 0
  fi
done
echo "install-slurm: installed $(slurmd -V)"
