# regserve — the two commands of a fresh machine:
#   make demo   build, fetch ONNX Runtime, register the example models, serve iris on 127.0.0.1:5000
#   make test   install what the tests need and run the whole suite
.PHONY: demo test build release ort venv fmt lint bench clean

CARGO ?= cargo

demo: release ort
	scripts/demo

test:
	scripts/test

build:
	$(CARGO) build

release:
	$(CARGO) build --release

ort:
	scripts/fetch-onnxruntime

venv:
	scripts/setup-venv scripts/requirements-test.txt

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: release ort
	bench/run

clean:
	$(CARGO) clean
