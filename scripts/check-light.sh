#!/usr/bin/env bash
# The light install holds: a fresh virtualenv with only CAIXA_EXTRAS (default
# ocr,translate,index,tts,llm) has no torch, and the repo's rules for those pipelines pass
# `caixa check` there (photos and prompts wait for the vision and imagegen extras).
# Usage: scripts/check-light.sh [VENV]   (default: a throwaway folder under /tmp, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-$(mktemp -d /tmp/caixa-light.XXXXXX)}
[ -n "${1:-}" ] || trap 'rm -rf "$venv"' EXIT
extras=${CAIXA_EXTRAS:-ocr,translate,index,tts,llm}
started=$(date +%s)
CAIXA_VENV=$venv CAIXA_EXTRAS=$extras scripts/setup.sh
echo "== set up in $(($(date +%s) - started)) s; the virtualenv takes $(du -sh "$venv" | cut -f1)"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "FAIL: torch is installed in a virtualenv with only $extras" >&2
  exit 1
fi
echo "== no torch"
"$venv/bin/python" -m pip list --format=freeze | grep -iE '^(torch|nvidia|stanza|spacy|sentence-transformers)' \
  && { echo "FAIL: a heavy package came with $extras" >&2; exit 1; }
out=$("$venv/bin/caixa" check --rules rules.yaml)
echo "$out"
status=0
for rule in scans speak mail bills questions notes sort; do
  grep -qE "^  $rule .* ready$" <<<"$out" || { echo "FAIL: rule $rule is not ready" >&2; status=1; }
done
for rule in photos prompts; do
  grep -qE "^  $rule .* waits for: " <<<"$out" || { echo "FAIL: rule $rule should wait" >&2; status=1; }
done
# the engines that pull torch are extras of their own: a rule that asks for one waits, and says
# what to install
engines=$(mktemp /tmp/caixa-engines.XXXXXX.yaml)
trap 'rm -f "$engines"; [ -n "${1:-}" ] || rm -rf "$venv"' EXIT
cat > "$engines" <<'YAML'
rules:
  - {name: argos, inbox: in, steps: [{translate: {to: de, engine: argos}}]}
  - {name: minilm, inbox: in, steps: [{index: {embedder: sentence-transformers}}]}
YAML
out=$("$venv/bin/caixa" check --rules "$engines")
echo "$out"
grep -q "caixa\[argos\]" <<<"$out" || { echo "FAIL: argos does not say how to install it" >&2; status=1; }
grep -q "caixa\[sentence-transformers\]" <<<"$out" \
  || { echo "FAIL: sentence-transformers does not say how to install it" >&2; status=1; }
[ "$status" -eq 0 ] && echo "== light install OK: $extras"
exit "$status"
