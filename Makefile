# The two commands a fresh Debian 12 machine needs: `make run` and `make test`.
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc)
CONF ?= conf/tidegate.conf

.PHONY: setup build run test test-release test-asan bench clean

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target tidegate

run: build
	@mkdir -p logs
	exec $(BUILD_DIR)/tidegate -p $(CURDIR) -c $(CONF) -g 'daemon off;'

test-release: setup
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DTIDEGATE_TESTS=ON >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)
	cd $(BUILD_DIR) && ctest --output-on-failure -j 2

test-asan: setup
	@cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTIDEGATE_TESTS=ON -DTIDEGATE_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j 2

# Release first (fast feedback), then the same suites under ASan+UBSan.
test: test-release test-asan

bench: build
	bash bench/run.sh

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
