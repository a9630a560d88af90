#!/usr/bin/env bash
# Prepares .deps/ on this machine for the GPU machine, which reaches no package registry: the
# Debian packages cudarts builds against, unpacked into .deps/root, and the Fashion-MNIST
# files in .deps/fashion-mnist. Pass '.deps' in the device tool's carry list.
# Idempotent: does nothing when .deps/root already holds the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libgtest-dev
          nlohmann-json3-dev libcli11-dev zlib1g zlib1g-dev)
mkdir -p .deps/debs .deps/root .deps/fashion-mnist
if [ ! -f .deps/root/.complete ]; then
  (cd .deps/debs && apt-get download "${packages[@]}")
  for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root; done
  rm -rf .deps/debs
  touch .deps/root/.complete
fi
cp -u /usr/share/datasets/fashion-mnist/*.gz .deps/fashion-mnist/
du -sh .deps
