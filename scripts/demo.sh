#!/usr/bin/env bash
# Runs caixa once over a fresh demo home (.demo/) made from rules.yaml and examples/inbox/,
# then reports what happened. Run it through `make demo`, which sets everything up first.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=.demo
rm -rf "$demo"
mkdir -p "$demo"
cp rules.yaml "$demo/"
cp -r examples/inbox "$demo/inbox"
export CAIXA_LOG_LEVEL="${CAIXA_LOG_LEVEL:-warning}" CAIXA_SETTLE_SECONDS="${CAIXA_SETTLE_SECONDS:-0.2}"
caixa=.venv/bin/caixa

echo "== caixa check: the rules, and which steps are not installed yet"
$caixa check --rules "$demo/rules.yaml"
echo
echo "== caixa run --once"
$caixa run --once --rules "$demo/rules.yaml" --home "$demo/home"
echo
echo "== caixa status"
$caixa status --home "$demo/home"
echo
echo "== caixa search, in English and in Portuguese"
for query in "monthly rent of the flat in Lisbon" "reparação da caldeira" "reunião sobre o índice"; do
  echo "\$ caixa search \"$query\" --limit 2"
  $caixa search "$query" --limit 2 --home "$demo/home" --rules "$demo/rules.yaml"
done
echo
echo "== what landed (under $demo/)"
(cd "$demo" && find outputs processed failed -type f 2>/dev/null | sort | sed 's/^/  /')
echo "== still in the inboxes, waiting for steps not installed yet"
(cd "$demo" && find inbox -type f | sort | sed 's/^/  /')
