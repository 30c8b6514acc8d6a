# Builds lib$module.so, the library manifest.toml names: `make` (`make clean` removes it).
CC ?= cc
CFLAGS ?= -O2 -Wall -Wextra

lib$module.so: $module.c polyplug_abi.h
	$$(CC) $$(CFLAGS) -shared -fPIC -o $$@ $module.c

clean:
	rm -f lib$module.so

.PHONY: clean
