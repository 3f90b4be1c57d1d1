# Every command a person needs. `make help` lists them.
.PHONY: help demo test build check fmt clippy bless
help:            ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'
demo:            ## run the demo fleet (README command 1)
	scripts/demo.sh
test:            ## run every test (README command 2; what CI runs)
	scripts/test.sh
build:           ## build all binaries
	cargo build --workspace --bins
check: fmt clippy ## formatting and lints
fmt:             ## check formatting
	cargo fmt --all -- --check
clippy:          ## lints, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings
bless:           ## regenerate committed artifacts (protobuf code, wire.lock, GraphQL SDL) after a deliberate change
	LANEWATCH_BLESS=1 cargo test -p lanewatch-proto -p lanewatch-control-plane
