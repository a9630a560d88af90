#!/usr/bin/env bash
# The tracked C++/CUDA sources are formatted with the checked-in .clang-format. Runs only with
# clang-format 14 (the version the tree is formatted with; others format some constructs
# differently) and skips (exit 77) otherwise. Fix with: clang-format -i <files>.
# Usage: format_check.sh SOURCE_DIR
set -euo pipefail
cd "$1"
command -v clang-format > /dev/null || { echo "format_check: no clang-format, skipped"; exit 77; }
major=$(clang-format --version | grep -oE "version [0-9]+" | grep -oE "[0-9]+")
[ "$major" = 14 ] || { echo "format_check: clang-format $major, not 14, skipped"; exit 77; }
files=$(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' 2>/dev/null || true)
[ -n "$files" ] || { echo "format_check: not a git checkout, skipped"; exit 77; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
if ! clang-format --dry-run --Werror $files 2> "$log"; then
  grep -E "^[^ ].*(warning|error)" "$log" | cut -d: -f1 | sort | uniq -c
  echo "format_check: files above differ from .clang-format (clang-format -i them)"
  exit 1
fi
echo "format_check: $(wc -w <<< "$files") files formatted"
