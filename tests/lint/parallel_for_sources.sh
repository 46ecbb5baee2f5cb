#!/usr/bin/env bash
# Every source that calls ATen's parallel_for/parallel_reduce includes util/parallel_for.h,
# whose #error fails the build unless the source is compiled with OpenMP (without it,
# every chunk runs on the calling thread and nothing says so).
set -euo pipefail
cd "$1"
bad=0
while IFS= read -r f; do
  if ! grep -q '#include "util/parallel_for.h"' "$f"; then
    echo "$f calls at::parallel_for but does not include util/parallel_for.h" >&2
    bad=1
  fi
done < <(grep -rlE 'at::parallel_(for|reduce)\(' src tools include --include='*.cpp' --include='*.h' | grep -v '^src/util/parallel_for.h$')
exit $bad
