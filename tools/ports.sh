# shellcheck shell=bash
# Sourced by tools/bridge.sh and bench/: picking ports for servers that cannot
# listen on port 0 and report the port they got (etcd, prometheus, node).

# pick_port: a port nothing on 127.0.0.1 listens on now, below the kernel's
# ephemeral range (ip_local_port_range), so no outgoing connection of this
# machine can be holding it. Another server can still take it before ours
# binds: callers retry with new ports when the bind fails (serve_on_ports).
pick_port() {
  local low=32768 top p
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  top=$((low - 1))
  ((top > 11000)) || top=60999 # an unusual range: fall back to anywhere high
  while :; do
    p=$(shuf -i "10000-$top" -n 1)
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
