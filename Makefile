# Thin wrapper over CMake.  `make run` and `make test` are the two commands a
# new user needs (see README.md); both install missing Debian packages first.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60

.PHONY: all deps configure run demo test test-unit test-asan test-tsan fuzz bench clean golden

all: configure
	cmake --build $(BUILD) -j $(JOBS)

configure:
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

deps:
	@scripts/install-deps.sh

# The demo (explanations of the sample images into build/demo/), then the
# app itself on http://127.0.0.1:8080 until Ctrl-C.  `make demo` stops
# after the demo.
run: demo
	$(BUILD)/camserve serve --host 127.0.0.1 --port $${CAMSERVE_PORT:-8080}

demo: deps all
	@scripts/demo.sh $(BUILD)/camserve

# Everything CI checks: the Release build with every ctest, the unit tests
# and the CLI/server tests again under ASan+UBSan and under ThreadSanitizer
# (a server's sanitizer report fails its test: tests/cli/lib/server_common.bash),
# then each libFuzzer harness for FUZZ_SECONDS.
test: deps all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-asan
	$(MAKE) test-tsan
	$(MAKE) fuzz

test-asan:
	@test -f $(ASAN_BUILD)/CMakeCache.txt || cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCS_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -L 'unit|cli' -j $(JOBS)

# The libraries (oneDNN's OpenMP, libmicrohttpd, ...) are not instrumented:
# races inside them are not ours to report; every race touching our code is.
test-tsan:
	@test -f $(TSAN_BUILD)/CMakeCache.txt || cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCS_TSAN=ON -DCS_CUDA=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && TSAN_OPTIONS="ignore_noninstrumented_modules=1 report_signal_unsafe=0 exitcode=66" \
		ctest --output-on-failure -L 'unit|cli' -j $(JOBS)

fuzz:
	@test -f $(FUZZ_BUILD)/CMakeCache.txt || CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCS_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	scripts/run-fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: deps all
	cd bench && npm install --ignore-scripts --no-audit --no-fund --silent
	GRADCAM=1 bench/run.sh $(BUILD)/camserve
	bench/cam.sh $(BUILD)/camserve
	bench/batch.sh $(BUILD)/camserve

golden:
	/usr/bin/python3 tools/make_golden.py --out tests/golden --float64

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)
