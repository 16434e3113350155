#!/usr/bin/env bash
# The catalogs of caixa's strings (caixa/locale/<lang>/LC_MESSAGES/caixa.po): gather the strings
# from the code and the page's templates, merge them into each language's catalog, compile.
# After it, translate the new entries of pt's caixa.po (English is the source), run it again,
# and commit both the .po and the .mo files.
set -euo pipefail
cd "$(dirname "$0")/.."
pybabel=.venv/bin/pybabel
mkdir -p caixa/locale
$pybabel extract -F babel.cfg -k N_ -k _ -k ngettext:1,2 --no-location --sort-output \
  --project caixa -o caixa/locale/caixa.pot .
for lang in en pt; do
  po=caixa/locale/$lang/LC_MESSAGES/caixa.po
  if [ -f "$po" ]; then
    $pybabel update -D caixa -i caixa/locale/caixa.pot -d caixa/locale -l "$lang" --no-fuzzy-matching
  else
    $pybabel init -D caixa -i caixa/locale/caixa.pot -d caixa/locale -l "$lang"
  fi
done
$pybabel compile -D caixa -d caixa/locale --statistics
