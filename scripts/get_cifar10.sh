#!/usr/bin/env bash
# Downloads CIFAR-10 (binary version) for users with internet access, checks the archive's
# MD5 as published on https://www.cs.toronto.edu/~kriz/cifar.html, and unpacks it.
#   scripts/get_cifar10.sh [DIR]   (default: data/)  ->  DIR/cifar-10-batches-bin/*.bin
# Then: --dataset cifar10 --data DIR/cifar-10-batches-bin
set -euo pipefail
dir=${1:-data}
url=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
md5=c32a1d4ab5d03f1284b67883e8d87530
mkdir -p "$dir"
archive=$dir/cifar-10-binary.tar.gz
if [ ! -f "$archive" ]; then
  if command -v curl > /dev/null; then curl -fL --retry 3 -o "$archive.part" "$url"
  else wget -O "$archive.part" "$url"; fi
  mv "$archive.part" "$archive"
fi
echo "$md5  $archive" | md5sum -c - || { echo "get_cifar10: checksum mismatch: delete $archive and retry" >&2; exit 1; }
tar -xzf "$archive" -C "$dir"
ls "$dir/cifar-10-batches-bin"
echo "CIFAR-10 ready: --dataset cifar10 --data $dir/cifar-10-batches-bin"
