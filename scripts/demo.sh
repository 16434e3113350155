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
venv=${CAIXA_VENV:-.venv}
caixa=$venv/bin/caixa
python=$venv/bin/python

installed() { $python -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))" "$@"; }
if installed ultralytics; then  # CAIXA_EXTRAS without vision: the photos rule waits
  echo "== photos that no one here made: ultralytics' own test images"
  assets=$($python -c "import importlib.util as u; print(u.find_spec('ultralytics').submodule_search_locations[0])")/assets
  cp "$assets/bus.jpg" "$assets/zidane.jpg" "$demo/inbox/photos/"
fi
if installed torch diffusers transformers; then  # without imagegen: the prompts rule waits
  echo "== building a tiny random-weight Stable Diffusion for the prompts rule (its images are noise)"
  $python -m tests.tiny_diffusion "$demo/models/tiny-sd"
fi
if installed faster_whisper; then  # without transcribe: the voice rule waits
  echo "== a voice memo for the voice rule, spoken now by the packaged Piper voice (no recording committed)"
  mkdir -p "$demo/inbox/voice"
  $python -m tests.speech_clip "$demo/inbox/voice/memo.wav" 2
fi
echo
echo "== caixa doctor: where each step runs on this machine, the models, what to fix"
$caixa doctor --rules "$demo/rules.yaml" --home "$demo/home" || true
echo

echo "== caixa check: the rules, and whether each one's steps are installed"
$caixa check --rules "$demo/rules.yaml"
echo
echo "== caixa run --once"
$caixa run --once --rules "$demo/rules.yaml" --home "$demo/home"
echo
echo "== caixa status"
$caixa status --home "$demo/home"
echo
echo "== caixa search, in English and in Portuguese"
for query in "monthly rent of the flat in Lisbon" "reparação da caldeira" "reunião sobre o índice" \
  "bus" "ônibus" "quando se paga a renda"; do
  echo "\$ caixa search \"$query\" --limit 2"
  $caixa search "$query" --limit 2 --home "$demo/home" --rules "$demo/rules.yaml"
done
echo
echo "== caixa ask: an answer from the indexed files by a local LLM (SmolLM2-135M: tiny, so the"
echo "   sources it cites matter more than its prose)"
$caixa ask "How much is the monthly rent of the flat?" --home "$demo/home" --rules "$demo/rules.yaml"
echo
echo "== the same, as a .ask file dropped into the questions inbox"
mkdir -p "$demo/inbox/questions"
echo "Quem faz a reparação da caldeira?" > "$demo/inbox/questions/caldeira.ask"
$caixa run --once --rules "$demo/rules.yaml" --home "$demo/home"
cat "$demo"/outputs/questions/caldeira/caldeira.answer.md
echo
echo "== the voice memo's transcript, and its subtitles' first lines"
cat "$demo"/outputs/voice/memo/memo.txt
head -n 7 "$demo"/outputs/voice/memo/memo.srt
echo
echo "== mail filed by the label the LLM gave it"
(cd "$demo/outputs" && find mail -name '*.label.json' | sort | sed 's/^/  /')
echo
echo "== what landed (under $demo/)"
(cd "$demo" && find outputs processed failed -type f 2>/dev/null | sort | sed 's/^/  /')
echo "== still in the inboxes (taken by no rule, or waiting for a step not installed)"
(cd "$demo" && find inbox -type f | sort | sed 's/^/  /')
echo
echo "== the web page: see, search, ask, drop and fix (Ctrl-C stops it)"
echo "  .venv/bin/caixa web --rules $demo/rules.yaml --home $demo/home"
echo "  then open http://127.0.0.1:8484/ (start the daemon beside it to drop files:"
echo "  .venv/bin/caixa run --rules $demo/rules.yaml --home $demo/home)"
