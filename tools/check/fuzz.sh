#!/usr/bin/env bash
# Runs every go test -fuzz target in the workspace for a short, bounded
# time each (FUZZTIME, default 4s): go test -fuzz takes one package and one
# target at a time, so this loops over them. A failure leaves its input in
# the package's testdata/fuzz/ (commit it: it becomes a regression seed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
fuzztime=${FUZZTIME:-4s}
failed=()
while IFS= read -r file; do
  dir=./$(dirname "$file")
  while IFS= read -r target; do
    echo "== fuzz $dir $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir"; then
      # Go's fuzzing engine sometimes ends a time-bounded run with a bare
      # "context deadline exceeded" and no failing input. A real failure
      # saves its input under testdata/fuzz/, where the next run replays it
      # as a seed and fails again at once, so one more run tells the two
      # apart without hiding a finding.
      echo "fuzz: $dir $target failed; running it once more to tell a finding from the engine's deadline flake"
      if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir"; then
        failed+=("$dir $target")
      fi
    fi
  done < <(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //')
done < <(git ls-files --cached --others --exclude-standard -- '*_test.go' | xargs grep -l '^func Fuzz' | sort)
if ((${#failed[@]})); then
  printf 'fuzz targets failed:\n' >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
