# shellcheck shell=bash
# What tests read: /opt/hpcpar-ci/systems.json (which parts are up, probed
# live, not taken from WANT) and /opt/hpcpar-ci/env (shell variables to source).

CI_MPI_MARKER=$CI_STATE_DIR/mpi-python

mpi_python() { [[ -s $CI_MPI_MARKER ]] && cat "$CI_MPI_MARKER"; }
mpi_status() {
  local py
  py=$(mpi_python) || return 1
  [[ -x $py ]] && "$py" -c 'import mpi4py' 2>/dev/null
}

# Probe every part; sets the global array UP_PARTS.
probe_parts() {
  UP_PARTS=()
  slurm_status && UP_PARTS+=(slurm)
  slurm_netns_status && UP_PARTS+=(slurm-netns)
  pbs_status && UP_PARTS+=(pbs)
  sge_status && UP_PARTS+=(sge)
  ssh_status && UP_PARTS+=(ssh)
  netns_status && UP_PARTS+=(netns)
  login_sshd_status && UP_PARTS+=(netns-sshd)
  mpi_status && UP_PARTS+=(mpi)
  return 0
}

is_up() { [[ " ${UP_PARTS[*]} " == *" $1 "* ]]; }

json_bool() { if is_up "$1"; then printf true; else printf false; fi; }

write_systems_json() {
  local p first=1
  install -d -m 0755 "$CI_STATE_DIR"
  {
    printf '{\n  "host": "%s",\n  "updated": "%s",\n  "systems": {' "$HEAD_NODE" "$(date -u +%FT%TZ)"
    for p in slurm slurm-netns pbs sge ssh netns netns-sshd mpi; do
      ((first)) || printf ','
      first=0
      printf '\n    "%s": %s' "$p" "$(json_bool "$p")"
    done
    printf '\n  },\n  "env_file": "%s"\n}\n' "$CI_ENV_FILE"
  } >"$CI_SYSTEMS_JSON.tmp"
  mv "$CI_SYSTEMS_JSON.tmp" "$CI_SYSTEMS_JSON"
}

# hpcpar reads HPCPAR_<SECTION>_<KEY> as configuration and refuses near-misses of those names
# (HPCPAR_SLURM_NODE vs HPCPAR_SLURM_NODES): facts for tests that could look like one go
# under HPCPAR_CI_.
env_slurm() {
  cat <<EOF
export HPCPAR_SLURM=1
export HPCPAR_SLURM_PARTITION=debug
export HPCPAR_CI_SLURM_NODE=$HEAD_NODE
export HPCPAR_SLURM_CPUS=16
EOF
  is_up slurm-netns && cat <<EOF
export HPCPAR_SLURM_NETNS_PARTITION=netns
export HPCPAR_SLURM_NETNS_NODE=$SLURM_NETNS_NODE
export HPCPAR_SLURM_NETNS_ADDR=$ADDR_COMPUTE
EOF
  return 0
}

env_sge() {
  cat <<EOF
export HPCPAR_SGE=1
export SGE_ROOT=$SGE_ROOT
export SGE_CELL=$SGE_CELL
export HPCPAR_SGE_BIN=/usr/bin
export HPCPAR_SGE_QUEUE=$SGE_QUEUE
export HPCPAR_SGE_PE_SMP=smp
export HPCPAR_SGE_PE_MPI=mpi
export HPCPAR_SGE_SLOTS=16
EOF
}

env_pbs() {
  cat <<EOF
export HPCPAR_PBS=1
# PBS-flavoured qsub/qstat/qdel/pbsnodes running on SLURM: PATH=\$HPCPAR_PBS_BIN:\$PATH
export HPCPAR_PBS_BIN=$PBS_BIN
EOF
}

env_ssh() {
  cat <<EOF
export HPCPAR_SSH=1
export HPCPAR_SSH_CONFIG=$SSH_CONFIG
export HPCPAR_SSH_KEY=$SSH_KEY
export HPCPAR_SSH_USER=root
export HPCPAR_CI_SSH_HOST=testhost
export HPCPAR_CI_SSH_HOST2=testhost2
export HPCPAR_SSH_ADDR=127.0.0.1
export HPCPAR_SSH_PORT=$SSH_PORT
export HPCPAR_SSH_PORT2=$SSH_PORT2
EOF
}

env_netns() {
  cat <<EOF
export HPCPAR_NETNS=1
export HPCPAR_NETNS_COMPUTE=$NS_COMPUTE
export HPCPAR_NETNS_LOGIN=$NS_LOGIN
export HPCPAR_NETNS_LAPTOP=$NS_LAPTOP
export HPCPAR_NETNS_HEAD_ADDR=$ADDR_HEAD
export HPCPAR_NETNS_COMPUTE_ADDR=$ADDR_COMPUTE
export HPCPAR_NETNS_LOGIN_ADDR=$ADDR_LOGIN
export HPCPAR_NETNS_LOGIN_EXT_ADDR=$ADDR_LOGIN_EXT
export HPCPAR_NETNS_LAPTOP_ADDR=$ADDR_LAPTOP
EOF
  is_up netns-sshd && printf 'export HPCPAR_NETNS_LOGIN_SSH_PORT=22\n'
  return 0
}

env_mpi() {
  local py
  py=$(mpi_python)
  printf 'export HPCPAR_MPI_PYTHON=%s\n' "$py"
  printf 'export HPCPAR_MPIEXEC=%s/mpiexec\n' "$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
}

write_env_file() {
  install -d -m 0755 "$CI_STATE_DIR"
  {
    printf '# hpcpar CI systems, written by ci/setup.sh at %s. Source it:\n' "$(date -u +%FT%TZ)"
    printf '#   . %s\n' "$CI_ENV_FILE"
    printf '# A part is described here only if it was up when this was written.\n'
    printf 'export HPCPAR_CI_SYSTEMS="%s"\n' "${UP_PARTS[*]}"
    printf 'export HPCPAR_CI_SYSTEMS_JSON=%s\n' "$CI_SYSTEMS_JSON"
    is_up slurm && env_slurm
    is_up sge && env_sge
    is_up pbs && env_pbs
    is_up ssh && env_ssh
    is_up netns && env_netns
    is_up mpi && env_mpi
    true
  } >"$CI_ENV_FILE.tmp"
  mv "$CI_ENV_FILE.tmp" "$CI_ENV_FILE"
}

write_state() {
  probe_parts
  write_systems_json
  write_env_file
  log "systems up: ${UP_PARTS[*]:-none} ($CI_SYSTEMS_JSON, $CI_ENV_FILE)"
}
