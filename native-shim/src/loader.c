/*
 * loader.c: the file libvirtd loads from the zfs slot (libvirt_storage_backend_zfs.so).
 *
 * libvirtd stops at start when a storage module fails to load, and the backend module proper
 * (libvirt_storage_backend_lvstor.so) uses libvirt's private ABI, whose symbols are versioned per upstream
 * release: after a libvirt upgrade without a rebuild it cannot load. So this loader uses only libvirt's public,
 * stable API, checks the running libvirt's version against the one the backend was built for, and only then
 * loads the backend from the directory this file really lives in. Whatever fails, it logs to libvirtd's
 * stderr (the journal) and returns 0. It also chain-loads the genuine zfs module, diverted aside, so zfs
 * pools keep working even when the lvstor backend is refused.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "shim-build-version.h"

#define BACKEND_FILE "libvirt_storage_backend_lvstor.so"
#define BACKEND_REGISTER "lvstorStorageBackendRegister"
#define GENUINE_ZFS_FILE "libvirt_storage_backend_zfs.so.distrib"
#define DEBIAN_BACKEND_DIR "/usr/lib/x86_64-linux-gnu/libvirt/storage-backend"

int virStorageBackendZFSRegister(void);

static void
lvstorLoaderLog(const char *level, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "lvstor storage module: %s: ", level);
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
}

/* Loads path and calls its register function; every failure is only logged. */
static void
lvstorLoadAndRegister(const char *path, const char *function, const char *what)
{
    void *handle;
    int (*registerFunction)(void);

    if (access(path, F_OK) != 0)
        return;
    if (!(handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE))) {
        lvstorLoaderLog("error", "cannot load %s: %s", what, dlerror());
        return;
    }
    if (!(registerFunction = (int (*)(void)) dlsym(handle, function))) {
        lvstorLoaderLog("error", "%s has no %s", what, function);
        return;
    }
    if (registerFunction() < 0) {
        virErrorPtr err = virGetLastError();
        lvstorLoaderLog("error", "%s failed to register: %s", what, err && err->message ? err->message : "?");
        virResetLastError();
    }
}

/* The directory of the file this loader was really loaded from (symlinks resolved). */
static char *
lvstorLoaderDirectory(void)
{
    Dl_info info;
    char resolved[PATH_MAX];

    if (!dladdr((void *) virStorageBackendZFSRegister, &info) || !info.dli_fname ||
        !realpath(info.dli_fname, resolved))
        return NULL;
    return strdup(dirname(resolved));
}

int
virStorageBackendZFSRegister(void)
{
    unsigned long running = 0;
    char *dir = lvstorLoaderDirectory();
    const char *chain = getenv("LVSTOR_SHIM_CHAIN_ZFS");
    char path[PATH_MAX];
    char version[32];

    if (!dir) {
        lvstorLoaderLog("error", "cannot find the directory of %s%s", "libvirt_storage_backend_zfs.so", "");
    } else if (virGetVersion(&running, NULL, NULL) < 0 || running != SHIM_LIBVIRT_VERSION_NUMBER) {
        virResetLastError();
        snprintf(version, sizeof(version), "%lu.%lu.%lu",
                 running / 1000000, (running / 1000) % 1000, running % 1000);
        lvstorLoaderLog("error", "built for libvirt %s but libvirt %s is running: pool type vstorage stays "
                        "unavailable; rebuild the module (make shim) and reinstall it",
                        SHIM_LIBVIRT_DEB_VERSION, version);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dir, BACKEND_FILE);
        if (access(path, F_OK) != 0)
            lvstorLoaderLog("error", "%s is missing%s: pool type vstorage stays unavailable", path, "");
        lvstorLoadAndRegister(path, BACKEND_REGISTER, path);
    }

    /* The genuine zfs module, diverted next to us; else at Debian's path (when we are loaded from elsewhere). */
    if (chain && *chain)
        snprintf(path, sizeof(path), "%s", chain);
    else
        snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", GENUINE_ZFS_FILE);
    if (access(path, F_OK) != 0 && !(chain && *chain))
        snprintf(path, sizeof(path), "%s/%s", DEBIAN_BACKEND_DIR, GENUINE_ZFS_FILE);
    lvstorLoadAndRegister(path, "virStorageBackendZFSRegister", path);
    free(dir);
    return 0;
}
