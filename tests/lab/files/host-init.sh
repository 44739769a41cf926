#!/bin/bash
# Entry point of a lab host container (under tini: `docker run --init`).
# Installs the pinned host keys and the lab's authorized key from /lab (read-only
# mount), then runs the host's own Docker Engine and sshd until one of them exits.
set -euo pipefail
name="${1:?usage: host-init.sh CONTAINER_NAME}"

install -d -m 0755 /run/sshd
install -d -m 0700 /root/.ssh
install -m 0600 /lab/authorized_keys /root/.ssh/authorized_keys
for key in /lab/hostkeys/ssh_host_*_key; do
    install -m 0600 "$key" /etc/ssh/
    install -m 0644 "$key.pub" /etc/ssh/
done

# leftovers of an unclean stop would keep dockerd/containerd from starting
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid

dockerd --cgroup-parent="/$name" >>/var/log/dockerd.log 2>&1 &
dockerd_pid=$!
/usr/sbin/sshd -D -e &
sshd_pid=$!

stop() {
    kill -TERM "$sshd_pid" "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    exit 0
}
trap stop TERM INT

wait -n
echo "host-init: sshd or dockerd exited; stopping" >&2
kill -TERM "$sshd_pid" "$dockerd_pid" 2>/dev/null || true
wait || true
exit 1
