#!/bin/bash
# Boot-time set-up of a lab host (run by vklab-init.service, before sshd and Docker):
# installs the pinned host keys and the lab's authorized key from /lab (a read-only
# mount). Everything else on the host is what its image and its own systemd made.
set -euo pipefail

install -d -m 0755 /run/sshd
install -d -m 0700 /root/.ssh
install -m 0600 /lab/authorized_keys /root/.ssh/authorized_keys
for key in /lab/hostkeys/ssh_host_*_key; do
    install -m 0600 "$key" /etc/ssh/
    install -m 0644 "$key.pub" /etc/ssh/
done
# leftovers of an unclean stop would keep dockerd/containerd from starting
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
