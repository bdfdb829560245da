#!/bin/bash
# The mutation check of the sequential boundary: each wrong variant (df = n, Pocock's flat weights, reversed
# O'Brien-Fleming weights) applied to a copy of the tracked files; prints the tests that fail for each. Every
# variant must fail tests/test_sequential.py::test_the_boundary_is_pinned_by_an_independent_computation.
#     bash bench/boundary_mutants.sh            (about 2 minutes on 2 cores)
set -u
repo=$(git rev-parse --show-toplevel)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for variant in df_n pocock reversed; do
  rm -rf "$work/repo" && mkdir -p "$work/repo"
  (cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$work/repo")
  cd "$work/repo"
  case $variant in
    df_n) sed -i 's/    df = (n - 1)\[looks\]/    df = n[looks]/' stats/sequential.py ;;
    pocock) sed -i 's|    return z \* np.sqrt(n\[looks\] / last)|    return z|' stats/sequential.py ;;
    reversed) sed -i 's|    return z \* np.sqrt(n\[looks\] / last)|    return z * np.sqrt(last / n[looks])|' stats/sequential.py ;;
  esac
  if cmp -s "$repo/stats/sequential.py" stats/sequential.py; then echo "$variant: the mutation did not apply"; exit 1; fi
  echo "== $variant"
  "$python" -m pytest -q -p no:randomly -p no:cacheprovider tests/test_sequential.py tests/test_adaptive.py \
      tests/test_page.py 2>&1 | grep -E "^FAILED|passed|failed"
  cd "$repo"
done
