# shellcheck shell=bash
# Fake cluster hosts as network namespaces. Topology (10.200.0.0/24, nothing
# routed out: ip_forward stays 0, no default routes inside the namespaces):
#
#   root ns "head"  hpbr0 10.200.0.1/26 --+-- hpv-compute == eth0 10.200.0.2/26  (hp-compute)
#                                         +-- hpv-login   == eth0 10.200.0.3/26  (hp-login)
#   hp-login  hpx-login 10.200.0.66/26 == hpx-laptop 10.200.0.65/26  (hp-laptop)
#
# hp-laptop can only reach hp-login (like a laptop outside the cluster), so
# tests of SSH tunnelling have to go through the login node's sshd.

NS_COMPUTE=hp-compute
NS_LOGIN=hp-login
NS_LAPTOP=hp-laptop
NS_BRIDGE=hpbr0
ADDR_HEAD=10.200.0.1
ADDR_COMPUTE=10.200.0.2
ADDR_LOGIN=10.200.0.3
ADDR_LAPTOP=10.200.0.65
ADDR_LOGIN_EXT=10.200.0.66
HOSTS_TAG='# hpcpar-netns'

netns_exists() { [[ -e /run/netns/$1 ]]; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

netns_add() {
  netns_exists "$1" || ip netns add "$1"
  ip -n "$1" link set lo up
}

netns_bridge() {
  link_exists "$NS_BRIDGE" || ip link add "$NS_BRIDGE" type bridge
  ip addr replace "$ADDR_HEAD/26" dev "$NS_BRIDGE"
  ip link set "$NS_BRIDGE" up
}

# netns_attach NS ADDR: veth hpv-<short> on the bridge, eth0 with ADDR inside NS.
netns_attach() {
  local ns=$1 addr=$2 short=${1#hp-}
  if ! ip -n "$ns" link show dev eth0 >/dev/null 2>&1; then
    link_exists "hpv-$short" && ip link del "hpv-$short"
    ip link add "hpv-$short" type veth peer name "tmp-$short"
    ip link set "tmp-$short" netns "$ns"
    ip -n "$ns" link set "tmp-$short" name eth0
  fi
  ip -n "$ns" addr replace "$addr/26" dev eth0
  ip -n "$ns" link set eth0 up
  ip link set "hpv-$short" master "$NS_BRIDGE"
  ip link set "hpv-$short" up
}

# The laptop <-> login point-to-point link, outside the bridge.
netns_laptop_link() {
  if ! ip -n "$NS_LOGIN" link show dev hpx-login >/dev/null 2>&1; then
    ip -n "$NS_LAPTOP" link del hpx-laptop 2>/dev/null || true
    ip link add hpx-login netns "$NS_LOGIN" type veth peer name hpx-laptop netns "$NS_LAPTOP"
  fi
  ip -n "$NS_LOGIN" addr replace "$ADDR_LOGIN_EXT/26" dev hpx-login
  ip -n "$NS_LOGIN" link set hpx-login up
  ip -n "$NS_LAPTOP" addr replace "$ADDR_LAPTOP/26" dev hpx-laptop
  ip -n "$NS_LAPTOP" link set hpx-laptop up
}

# /etc/hosts without our tagged lines (used by both up and down).
hosts_without_ours() { grep -v -F "$HOSTS_TAG" /etc/hosts || true; }

# Names must resolve: MPICH's mpiexec inside a compute1 job looks its own name up.
netns_hosts_up() {
  {
    hosts_without_ours
    printf '%s compute1 %s\n' "$ADDR_COMPUTE" "$HOSTS_TAG"
    printf '%s login1 %s\n' "$ADDR_LOGIN" "$HOSTS_TAG"
    printf '%s login1-ext %s\n' "$ADDR_LOGIN_EXT" "$HOSTS_TAG"
    printf '%s laptop %s\n' "$ADDR_LAPTOP" "$HOSTS_TAG"
  } | rewrite_in_place /etc/hosts
}

netns_hosts_down() { hosts_without_ours | rewrite_in_place /etc/hosts; }

netns_topology_up() {
  local ns
  for ns in "$NS_COMPUTE" "$NS_LOGIN" "$NS_LAPTOP"; do netns_add "$ns"; done
  netns_bridge
  netns_attach "$NS_COMPUTE" "$ADDR_COMPUTE"
  netns_attach "$NS_LOGIN" "$ADDR_LOGIN"
  netns_laptop_link
  netns_hosts_up
}

# Kernel-level readiness: addresses are configured; the bridge ports forward.
netns_reachable() {
  ip -n "$NS_COMPUTE" route get "$ADDR_HEAD" >/dev/null &&
    ip -n "$NS_LAPTOP" route get "$ADDR_LOGIN_EXT" >/dev/null &&
    [[ $(cat "/sys/class/net/hpv-compute/brport/state" 2>/dev/null) == 3 ]] &&
    [[ $(cat "/sys/class/net/hpv-login/brport/state" 2>/dev/null) == 3 ]]
}

netns_up() {
  local t0
  t0=$(now_us)
  netns_topology_up
  wait_until 20 "bridge ports forwarding" netns_reachable
  login_sshd_up
  log "up in $(since "$t0") (namespaces $NS_COMPUTE $NS_LOGIN $NS_LAPTOP, bridge $NS_BRIDGE $ADDR_HEAD)"
}

netns_status() {
  netns_exists "$NS_COMPUTE" && netns_exists "$NS_LOGIN" && netns_exists "$NS_LAPTOP" &&
    ip -br addr show dev "$NS_BRIDGE" 2>/dev/null | grep -q -F "$ADDR_HEAD/"
}

# Stop whatever still runs inside NS, by the PIDs the kernel reports for it;
# a leftover process would keep the namespace alive after `ip netns del`.
netns_kill_inside() {
  local ns=$1 pid
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    log "stopping PID $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?')) left in $ns"
    stop_pid "$pid" 5
  done
}

netns_down() {
  local ns
  for ns in "$NS_COMPUTE" "$NS_LOGIN" "$NS_LAPTOP"; do
    netns_exists "$ns" || continue
    netns_kill_inside "$ns"
    ip netns del "$ns"
  done
  # The veths die with their namespace; the bridge lives in the root namespace.
  link_exists hpv-compute && ip link del hpv-compute
  link_exists hpv-login && ip link del hpv-login
  link_exists "$NS_BRIDGE" && ip link del "$NS_BRIDGE"
  netns_hosts_down
  return 0
}
