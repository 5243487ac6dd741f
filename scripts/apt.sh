#!/usr/bin/env bash
# Install Debian packages that are missing: apt.sh PACKAGE... (as root, or through sudo;
# apt-get update only when the first try fails, as on a fresh image with no package lists).
set -euo pipefail
[ "$#" -gt 0 ] || exit 0
echo "== installing $*"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "$@" || {
  $sudo apt-get update -q
  $sudo apt-get install -y -q "$@"
}
