# shellcheck shell=bash
# PBS syntax on top of SLURM: Debian's slurm-wlm-torque wrappers (qsub, qstat,
# qdel, pbsnodes, ... in perl) unpacked to /opt/pbs-slurm instead of installed,
# because the package Conflicts with gridengine-client (both own /usr/bin/qsub)
# and its postinst would point /usr/bin/mpiexec at mpiexec.slurm.
# The #PBS lines of a script are parsed by sbatch itself; spank_pbs sets PBS_*.

PBS_DIR=/opt/pbs-slurm
PBS_BIN=$PBS_DIR/bin
PBS_DEB_DIR=$CI_STATE_DIR/debs
PBS_SPANK_CONF=/etc/slurm/plugstack.conf.d/pbs.conf
PBS_SPANK_SO=/usr/lib/x86_64-linux-gnu/slurm-wlm/spank_pbs.so

# The perl modules the wrappers use; slurm-wlm-torque itself is only downloaded.
pbs_pkgs() { echo libslurm-perl libslurmdb-perl libswitch-perl; }

pbs_deb() { compgen -G "$PBS_DEB_DIR/slurm-wlm-torque_*.deb" | tail -n 1; }

# Called from the apt step (after apt-get update) when the .deb is missing.
pbs_download_deb() {
  install -d -m 0755 "$PBS_DEB_DIR"
  # Sandbox user root: _apt cannot write into this root-owned directory.
  (cd "$PBS_DEB_DIR" && apt-get download -q -o APT::Sandbox::User=root slurm-wlm-torque)
}

# The wrappers call "${FindBin::Bin}/sbatch" etc., so the SLURM commands must
# sit next to them.
pbs_unpack() {
  local deb=$1 tmp cmd
  tmp=$(mktemp -d)
  dpkg-deb -x "$deb" "$tmp"
  rm -rf "$PBS_DIR.new"
  install -d -m 0755 "$PBS_DIR.new/bin" "$PBS_DIR.new/share"
  cp -a "$tmp/usr/bin/." "$PBS_DIR.new/bin/"
  cp -a "$tmp/usr/share/man" "$PBS_DIR.new/share/"
  for cmd in sbatch salloc srun squeue scontrol scancel sinfo; do
    ln -s "/usr/bin/$cmd" "$PBS_DIR.new/bin/$cmd"
  done
  basename "$deb" >"$PBS_DIR.new/.deb"
  rm -rf "$tmp" "$PBS_DIR"
  mv "$PBS_DIR.new" "$PBS_DIR"
}

pbs_spank() {
  [[ -e $PBS_SPANK_SO ]] || die "$PBS_SPANK_SO missing (slurm-wlm-basic-plugins)"
  install -d -m 0755 /etc/slurm/plugstack.conf.d
  # Debian's slurmd does not ship plugstack.conf; make sure it includes the .d dir.
  if ! grep -qs 'plugstack.conf.d' /etc/slurm/plugstack.conf; then
    printf 'include /etc/slurm/plugstack.conf.d/*.conf\n' >>/etc/slurm/plugstack.conf
  fi
  printf 'required %s\n' "$PBS_SPANK_SO" | write_if_changed "$PBS_SPANK_CONF" 0644 || true
}

pbs_ok() { "$PBS_BIN/pbsnodes" 2>/dev/null | grep -q "np = "; }

pbs_up() {
  local t0 deb
  t0=$(now_us)
  deb=$(pbs_deb) || true
  [[ -n $deb ]] || die "no slurm-wlm-torque .deb in $PBS_DEB_DIR (apt step skipped?)"
  if [[ ! -x $PBS_BIN/qsub || $(cat "$PBS_DIR/.deb" 2>/dev/null) != "$(basename "$deb")" ]]; then
    pbs_unpack "$deb"
  fi
  pbs_spank
  wait_until 20 "$PBS_BIN/pbsnodes lists the SLURM node" pbs_ok
  log "up in $(since "$t0") (wrappers in $PBS_BIN, run on SLURM)"
}

pbs_status() { [[ -x $PBS_BIN/qsub ]] && slurm_status; }
