#!/usr/bin/env bash
# The install_consumer test: installs the build tree into a fresh prefix, then configures,
# builds and runs tests/consumer against it, as a user's own project would.
# usage: run.sh <build-dir> <consumer-source-dir> [<work-dir>]
set -euo pipefail

build_dir=$(cd "$1" && pwd)
consumer_src=$(cd "$2" && pwd)
work_dir=${3:-$build_dir/install_consumer}

rm -rf "$work_dir"
mkdir -p "$work_dir"
prefix=$work_dir/prefix

cmake --install "$build_dir" --prefix "$prefix"
# Only the installed copy may be found: the build tree's package registry is not consulted.
cmake -S "$consumer_src" -B "$work_dir/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_BUILD_TYPE=Release
cmake --build "$work_dir/build" -j2
"$work_dir/build/consumer"

# The installed sample starts too (its RPATH finds the installed library).
if [ -x "$prefix/bin/minimal_train" ]; then
  "$prefix/bin/minimal_train" --help > /dev/null
fi
echo "install_consumer: ok"
