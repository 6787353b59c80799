#!/usr/bin/env bash
# Start a Docker engine when none answers (Debian's docker.io has no systemd here).
# The Docker driver's tests need one; without it they skip with a reason.
set -u
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd not installed: the Docker tests will be skipped" >&2; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot start dockerd; the Docker tests will be skipped" >&2; exit 0
fi
nohup dockerd >/var/tmp/dockerd.log 2>&1 &
for _ in $(seq 1 100); do
  if docker info >/dev/null 2>&1; then echo "dockerd started"; exit 0; fi
  sleep 0.1
done
echo "dockerd did not answer within 10 s (see /var/tmp/dockerd.log)" >&2
exit 0
