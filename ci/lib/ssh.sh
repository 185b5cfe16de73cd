# shellcheck shell=bash
# A private sshd for the tests: its own keys and configs under /opt/hpcpar-ssh,
# listening on loopback only (ports 2222 and 2223 play two different hosts),
# plus a second one inside the hp-login namespace on port 22.
# Debian's own sshd service is left alone (and is not started on this image).

SSH_DIR=/opt/hpcpar-ssh
SSH_CONFIG=$SSH_DIR/ssh_config
SSH_KEY=$SSH_DIR/id_ed25519
SSH_PORT=2222
SSH_PORT2=2223
SSHD_CONFIG=$SSH_DIR/sshd_config
SSHD_PID=$SSH_DIR/sshd.pid
SSHD_LOGIN_CONFIG=$SSH_DIR/sshd_login_config
SSHD_LOGIN_PID=$SSH_DIR/sshd_login.pid
USER_SSH_CONFIG=/root/.ssh/config
USER_SSH_INCLUDE="Include $SSH_CONFIG"

ssh_pkgs() { echo openssh-server openssh-client; }

ssh_keys() {
  install -d -m 0700 "$SSH_DIR"
  [[ -s $SSH_DIR/ssh_host_ed25519_key ]] ||
    ssh-keygen -q -t ed25519 -N '' -C hpcpar-ci-host -f "$SSH_DIR/ssh_host_ed25519_key"
  [[ -s $SSH_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C hpcpar-ci-client -f "$SSH_KEY"
  write_if_changed "$SSH_DIR/authorized_keys" 0600 <"$SSH_KEY.pub" || true
}

# sshd_config_text PIDFILE PORT LISTEN...: settings common to both daemons.
# PYENV_REHASH_TIMEOUT bounds root's ~/.bashrc `pyenv rehash`, which otherwise
# waits up to 60s per session on pyenv's lock when sessions start in parallel.
sshd_config_text() {
  local pidfile=$1 port=$2 addr
  shift 2
  printf 'Port %s\n' "$port"
  [[ $port == "$SSH_PORT" ]] && printf 'Port %s\n' "$SSH_PORT2"
  for addr in "$@"; do printf 'ListenAddress %s\n' "$addr"; done
  cat <<EOF
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $pidfile
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
X11Forwarding no
UseDNS no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG LC_* PYENV_*
SetEnv PYENV_REHASH_TIMEOUT=2
Subsystem sftp internal-sftp
EOF
}

ssh_client_config_text() {
  cat <<EOF
# hpcpar CI hosts; use: ssh -F $SSH_CONFIG testhost CMD
Host testhost
    HostName 127.0.0.1
    Port $SSH_PORT
Host testhost2
    HostName 127.0.0.1
    Port $SSH_PORT2
Host localhost 127.0.0.1
    Port $SSH_PORT
Host login1 10.200.0.3 login1-ext 10.200.0.66
    Port 22
Host testhost testhost2 localhost 127.0.0.1 login1 10.200.0.3 login1-ext 10.200.0.66
    User root
    IdentityFile $SSH_KEY
    IdentitiesOnly yes
    PubkeyAuthentication yes
    PasswordAuthentication no
    BatchMode yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    ConnectTimeout 10
    SetEnv PYENV_REHASH_TIMEOUT=2
EOF
}

ssh_files() {
  ssh_keys
  sshd_config_text "$SSHD_PID" "$SSH_PORT" 127.0.0.1 | write_if_changed "$SSHD_CONFIG" 0600 || true
  sshd_config_text "$SSHD_LOGIN_PID" 22 10.200.0.3 10.200.0.66 |
    write_if_changed "$SSHD_LOGIN_CONFIG" 0600 || true
  ssh_client_config_text | write_if_changed "$SSH_CONFIG" 0644 || true
  install -d -m 0755 /run/sshd # privilege separation directory, lost on reboot
  /usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd -t rejected $SSHD_CONFIG"
  /usr/sbin/sshd -t -f "$SSHD_LOGIN_CONFIG" || die "sshd -t rejected $SSHD_LOGIN_CONFIG"
}

# sshd_start_or_reload PIDFILE CONFIG LOGFILE [PREFIX...]: start (or HUP-reload after a config
# change) one sshd. A running sshd re-reads its config on SIGHUP.
sshd_start_or_reload() {
  local pidfile=$1 config=$2 logfile=$3 pid
  shift 3
  if pid=$(pidfile_pid "$pidfile" sshd); then
    if [[ $config -nt $pidfile ]]; then
      log "config changed, reloading sshd PID $pid"
      kill -HUP "$pid"
      touch "$pidfile"
    fi
    return 0
  fi
  rm -f "$pidfile"
  spawn "$logfile" "$@" /usr/sbin/sshd -f "$config" -E "$logfile"
  wait_pidfile "$pidfile" sshd "$logfile"
}

ssh_ok() { ssh -F "$SSH_CONFIG" "$1" true </dev/null; }

# Put our hosts into root's own ssh config, so plain `ssh testhost` works.
ssh_install_user_config() {
  install -d -m 0700 /root/.ssh
  touch "$USER_SSH_CONFIG"
  grep -q -x -F "$USER_SSH_INCLUDE" "$USER_SSH_CONFIG" && return 0
  # Include must come first: ssh uses the first value it finds for an option.
  { printf '%s\n' "$USER_SSH_INCLUDE"; cat "$USER_SSH_CONFIG"; } | rewrite_in_place "$USER_SSH_CONFIG"
  log "added '$USER_SSH_INCLUDE' to $USER_SSH_CONFIG"
}

ssh_remove_user_config() {
  [[ -f $USER_SSH_CONFIG ]] || return 0
  grep -q -x -F "$USER_SSH_INCLUDE" "$USER_SSH_CONFIG" || return 0
  { grep -v -x -F "$USER_SSH_INCLUDE" "$USER_SSH_CONFIG" || true; } | rewrite_in_place "$USER_SSH_CONFIG"
  log "removed '$USER_SSH_INCLUDE' from $USER_SSH_CONFIG"
}

ssh_up() {
  local t0
  t0=$(now_us)
  ssh_files
  sshd_start_or_reload "$SSHD_PID" "$SSHD_CONFIG" "$SSH_DIR/sshd.log"
  wait_until 20 "ssh -F $SSH_CONFIG testhost true" ssh_ok testhost
  wait_until 20 "ssh -F $SSH_CONFIG testhost2 true" ssh_ok testhost2
  [[ ${INSTALL_USER_SSH_CONFIG:-0} == 1 ]] && ssh_install_user_config
  log "up in $(since "$t0") (127.0.0.1:$SSH_PORT testhost, :$SSH_PORT2 testhost2)"
}

# The login node's sshd runs inside hp-login (ports 22 on .3 and .66).
# `ip netns exec` is fine for sshd (unlike slurmd it does not care about /sys).
login_sshd_up() {
  ssh_files
  sshd_start_or_reload "$SSHD_LOGIN_PID" "$SSHD_LOGIN_CONFIG" "$SSH_DIR/sshd_login.log" \
    ip netns exec "$NS_LOGIN"
  wait_until 20 "ssh from $NS_LAPTOP to root@$ADDR_LOGIN_EXT" \
    ip netns exec "$NS_LAPTOP" ssh -F "$SSH_CONFIG" "$ADDR_LOGIN_EXT" true
}

ssh_status() { pidfile_pid "$SSHD_PID" sshd >/dev/null; }
login_sshd_status() { pidfile_pid "$SSHD_LOGIN_PID" sshd >/dev/null; }

ssh_down() {
  stop_pidfile "$SSHD_PID" sshd
  ssh_remove_user_config
}

login_sshd_down() { stop_pidfile "$SSHD_LOGIN_PID" sshd; }
