#!/usr/bin/env bash
# Prepares .deps/ on this machine for the GPU machine, which reaches no package registry: the
# Debian packages cudarts builds against, unpacked into .deps/root, and the Fashion-MNIST
# files in .deps/fashion-mnist. Pass '.deps' in the device tool's carry list.
# Idempotent: does nothing when .deps/root already holds the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
# No OpenBLAS (35 MB): without it cudarts uses its built-in GEMM, enough for test references.
packages=(libgtest-dev nlohmann-json3-dev libcli11-dev zlib1g zlib1g-dev)
mkdir -p .deps/debs .deps/root .deps/fashion-mnist
if [ ! -f .deps/root/.complete ]; then
  (cd .deps/debs && apt-get download "${packages[@]}")
  for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root; done
  rm -rf .deps/debs .deps/root/usr/share/doc .deps/root/usr/share/man
  find .deps/root -name "*.a" ! -name "libgtest*.a" ! -name "libgmock*.a" -delete
  # Absolute symlinks (libz.so -> /lib/...) would point outside the carried tree: make them
  # relative to their target inside .deps/root.
  find .deps/root -type l | while read -r link; do
    target=$(readlink "$link")
    if [ "${target#/}" != "$target" ] && [ -e ".deps/root$target" ]; then
      ln -sfn "$(realpath --relative-to="$(dirname "$link")" ".deps/root$target")" "$link"
    fi
  done
  touch .deps/root/.complete
fi
cp -u /usr/share/datasets/fashion-mnist/*.gz .deps/fashion-mnist/
du -sh .deps
size=$(du -sm .deps | cut -f1)
if [ "$size" -gt 60 ]; then
  echo "device_deps: .deps is ${size} MB; the device tool carries at most 64 MiB with the tree" >&2
  exit 1
fi
