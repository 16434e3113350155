.PHONY: demo test bench lint

demo:  ## set up, then run caixa once on a demo home and report what happened
	scripts/setup.sh
	scripts/demo.sh

test:  ## set up, then run the whole test suite (real files, real daemon subprocesses)
	scripts/setup.sh
	.venv/bin/python -m pytest -q

bench:  ## set up (with OCRmyPDF and friends), then run every benchmark; each prints a ratio
	scripts/setup.sh --bench
	for b in bench/*.py; do .venv/bin/python "$$b" || exit 1; done

lint:
	.venv/bin/ruff check caixa tests bench
	.venv/bin/ruff format --check caixa tests bench
