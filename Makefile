# LibvirtStorage: build, test, benchmark and demo targets. `make test` is what CI (.ci/run) runs.
DOTNET ?= dotnet
CONFIG ?= Debug
DEMO_DIR ?= .demo
LVSTOR := src/lvstor/bin/$(CONFIG)/net10.0/lvstor.dll

.PHONY: all build test bench demo guest-smoke soak shim clean

all: build

build:
	$(DOTNET) build LibvirtStorage.sln -c $(CONFIG)

# Builds everything and runs every test project in the solution; TRX reports go to TestResults/.
test:
	rm -rf TestResults
	$(DOTNET) test LibvirtStorage.sln -c $(CONFIG)

# Engine vs qemu-img (docs/performance.md); live stream and commit of a 1 GiB layer, StorageService vs
# qemu-storage-daemon (QMP) and qemu-img (its own section of docs/performance.md); then our vhost-user-blk
# back-end vs qemu-storage-daemon through the C# front-end with a host fio ceiling (docs/performance-vhost.md).
bench:
	$(DOTNET) build -c Release bench/LibvirtStorage.Bench
	$(DOTNET) run -c Release --no-build --project bench/LibvirtStorage.Bench -- engine --out docs/performance.md
	$(DOTNET) run -c Release --no-build --project bench/LibvirtStorage.Bench -- jobs --repeat 3 --out docs/performance.md
	$(DOTNET) run -c Release --no-build --project bench/LibvirtStorage.Bench -- vhost --out docs/performance-vhost.md

# The main job: lvstord (embedded default config) on a private D-Bus daemon, a demo pool and volume made with
# the lvstor CLI, and a C# vhost-user-blk front-end doing verified I/O through the volume's socket, with a live
# snapshot; everything stays under $(DEMO_DIR). `lvstor demo DIR` is the older image-engine-only tour.
demo:
	$(DOTNET) build src/lvstord -c $(CONFIG)
	$(DOTNET) build src/lvstor -c $(CONFIG)
	$(DOTNET) build src/lvstor-demo -c $(CONFIG)
	$(DOTNET) src/lvstor-demo/bin/$(CONFIG)/net10.0/lvstor-demo.dll --work $(DEMO_DIR) \
		--lvstord src/lvstord/bin/$(CONFIG)/net10.0/lvstord --lvstor src/lvstor/bin/$(CONFIG)/net10.0/lvstor

# Boots a real QEMU guest (TCG) on our vhost-user-blk back-end, then on qemu-storage-daemon (the
# reference, not gating), with write-verify and fio (crc32c verify); see tests/guest/README.md.
# make test runs the lvstor half through tests/LibvirtStorage.Guest.Tests.
guest-smoke:
	$(DOTNET) build -c Release src/lvstor-vhost-blk
	LVSTOR_SMOKE_BACKEND=lvstor tests/guest/qsd-smoke.sh fio
	LVSTOR_SMOKE_BACKEND=qsd tests/guest/qsd-smoke.sh fio

# Repeated guest boots with fio verify under a watchdog, counting ok/fail/hang for each back-end.
SOAK_RUNS ?= 30
soak:
	$(DOTNET) build -c Release src/lvstor-vhost-blk
	tests/guest/soak.sh $(SOAK_RUNS) env LVSTOR_SMOKE_BACKEND=lvstor tests/guest/qsd-smoke.sh fio
	tests/guest/soak.sh $(SOAK_RUNS) env LVSTOR_SMOKE_BACKEND=qsd tests/guest/qsd-smoke.sh fio

# The libvirt storage module (native-shim/README.md): fetches Debian's source of the installed libvirt with
# apt-get source and builds native-shim/build/libvirt_storage_backend_{zfs,lvstor}.so (loader, backend) against it.
shim:
	$(MAKE) -C native-shim

clean:
	$(DOTNET) clean LibvirtStorage.sln -c $(CONFIG)
	rm -rf TestResults $(DEMO_DIR) artifacts
