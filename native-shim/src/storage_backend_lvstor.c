/*
 * storage_backend_lvstor.c: libvirt storage backend that delegates pools and volumes to lvstord.
 *
 * libvirtd loads loader.c's libvirt_storage_backend_zfs.so from its zfs module slot; that loader checks the
 * libvirt version and loads this file, libvirt_storage_backend_lvstor.so, which registers a backend for pool
 * type "vstorage" (Debian never builds its own). Every callback forwards to lvstord over the system bus
 * (lvstor_bus.c). libvirt never opens an image: a volume's path is its vhost-user socket.
 *
 * Locking (libvirt 9.0 storage_driver.c): the pool object is locked during checkPool, startPool,
 * refreshPool, stopPool, createVol, refreshVol, deleteVol and resizeVol, so those make only short calls;
 * buildVol, buildVolFrom, uploadVol, downloadVol and wipeVol run unlocked and may wait for lvstord's jobs.
 */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE /* O_TMPFILE */
#endif
#include <config.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gunixfdlist.h>

#include "internal.h"
#include "datatypes.h"
#include "storage_backend.h"
#include "virerror.h"
#include "virfdstream.h"
#include "virlog.h"

#include "lvstor_bus.h"
#include "shim-build-version.h"

#define VIR_FROM_THIS VIR_FROM_STORAGE

VIR_LOG_INIT("storage.storage_backend_lvstor");

/* Exported so `strings`/`nm` show which libvirt a built module belongs to. */
const char lvstorShimBuiltForLibvirt[] = SHIM_LIBVIRT_DEB_VERSION;

/* ------------------------------------------------------------------ */
/* volume definitions from lvstord's Volume properties                 */

/* The path libvirt shows for one layer of a backing chain: another volume's socket, or for a snapshot
 * layer (which has no socket of its own) the layer's file, shown for information only. */
static char *
lvstorBackingLayerPath(const char *runtimeDirectory, const char *pool,
                       const char *volume, const char *snapshot, const char *file)
{
    if (*volume && !*snapshot)
        return lvstorSocketPath(runtimeDirectory, pool, volume);
    return g_strdup(file);
}

static int
lvstorFormatFromString(const char *format)
{
    int value = virStorageFileFormatTypeFromString(format);
    return value < 0 ? VIR_STORAGE_FILE_NONE : value;
}

/* Replaces vol's sizes, format and backing chain with what lvstord reports. */
static void
lvstorFillVolDef(virStorageVolDef *vol, GVariant *props, const char *runtimeDirectory, const char *pool)
{
    g_autoptr(GVariant) chain = NULL;
    virStorageSource *layer = &vol->target;
    GVariantIter iter;
    const char *volume, *snapshot, *format, *file;

    vol->type = VIR_STORAGE_VOL_FILE;
    vol->target.type = VIR_STORAGE_TYPE_FILE;
    vol->target.capacity = lvstorDictU64(props, "Capacity");
    vol->target.allocation = lvstorDictU64(props, "Allocation");
    vol->target.physical = vol->target.allocation;
    vol->target.format = lvstorFormatFromString(lvstorDictString(props, "Format"));

    /* Always rebuilt: libvirt itself may have probed the path (it does after vol-wipe). */
    virStorageSourceBackingStoreClear(&vol->target);
    if (!(chain = g_variant_lookup_value(props, "BackingChain", G_VARIANT_TYPE("a(ssss)"))))
        return;
    g_variant_iter_init(&iter, chain);
    while (g_variant_iter_next(&iter, "(&s&s&s&s)", &volume, &snapshot, &format, &file)) {
        layer->backingStore = virStorageSourceNew();
        layer = layer->backingStore;
        layer->type = VIR_STORAGE_TYPE_FILE;
        layer->path = lvstorBackingLayerPath(runtimeDirectory, pool, volume, snapshot, file);
        layer->format = lvstorFormatFromString(format);
    }
}

/* A voldef for a volume lvstord lists; key and path are the volume's socket (see createVol). */
static virStorageVolDef *
lvstorNewVolDef(GVariant *props, const char *runtimeDirectory, const char *pool)
{
    virStorageVolDef *vol = g_new0(virStorageVolDef, 1);

    vol->name = g_strdup(lvstorDictString(props, "Name"));
    vol->target.path = g_strdup(lvstorDictString(props, "Path"));
    vol->key = g_strdup(vol->target.path);
    lvstorFillVolDef(vol, props, runtimeDirectory, pool);
    return vol;
}

/* ------------------------------------------------------------------ */
/* pools                                                               */

static int
lvstorCheckPool(virStoragePoolObj *pool, bool *active)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *path = NULL;
    g_autoptr(GVariant) props = NULL;

    /* Runs while libvirtd starts: lvstord being down must not stop libvirtd, only leave the pool inactive. */
    *active = false;
    if (!(path = lvstorPoolPath(def->name)) ||
        !(props = lvstorGetAll(path, LVSTOR_POOL_IFACE, LVSTOR_NOT_FOUND_IS_POOL))) {
        VIR_WARN("pool '%s' left inactive: %s", def->name, virGetLastErrorMessage());
        virResetLastError();
        return 0;
    }
    *active = lvstorDictBool(props, "Active");
    return 0;
}

/* Directory paths compared as written, ignoring trailing slashes. */
static bool
lvstorSameDirectory(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    while (la > 1 && a[la - 1] == '/')
        la--;
    while (lb > 1 && b[lb - 1] == '/')
        lb--;
    return la == lb && strncmp(a, b, la) == 0;
}

static int
lvstorStartPool(virStoragePoolObj *pool)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) props = NULL;
    g_autofree char *path = NULL;
    const char *lvstorPath;

    if (!def->target.path) {
        virReportError(VIR_ERR_INVALID_ARG, "pool '%s' needs <target><path>: the directory lvstord keeps "
                       "its images in", def->name);
        return -1;
    }
    /* D-Bus strings must be UTF-8 (GVariant would refuse them with a critical warning). */
    if (!g_utf8_validate(def->name, -1, NULL) || !g_utf8_validate(def->target.path, -1, NULL)) {
        virReportError(VIR_ERR_INVALID_ARG, "%s", "pool name and target path must be UTF-8");
        return -1;
    }

    reply = lvstorCallQuiet(LVSTOR_MANAGER_PATH, LVSTOR_MANAGER_IFACE, "GetPool",
                            g_variant_new("(s)", def->name), "(o)", NULL, &err);
    if (!reply && lvstorErrorIs(err, "NotFound")) {
        g_clear_error(&err);
        reply = lvstorCallQuiet(LVSTOR_MANAGER_PATH, LVSTOR_MANAGER_IFACE, "DefinePool",
                                g_variant_new("(ss)", def->name, def->target.path), "(o)", NULL, &err);
    }
    if (!reply) {
        lvstorReportError("lvstord GetPool/DefinePool", err, LVSTOR_NOT_FOUND_IS_POOL);
        return -1;
    }
    g_variant_get(reply, "(o)", &path);

    if (!(props = lvstorGetAll(path, LVSTOR_POOL_IFACE, LVSTOR_NOT_FOUND_IS_POOL)))
        return -1;
    lvstorPath = lvstorDictString(props, "Path");
    if (!lvstorSameDirectory(lvstorPath, def->target.path)) {
        virReportError(VIR_ERR_INVALID_ARG,
                       "lvstord already has a pool '%s' over '%s', not '%s': use that path in the pool's "
                       "<target><path>, or another pool name", def->name, lvstorPath, def->target.path);
        return -1;
    }
    if (lvstorDictBool(props, "Active"))
        return 0;

    g_clear_pointer(&reply, g_variant_unref);
    if (!(reply = lvstorCall(path, LVSTOR_POOL_IFACE, "Start", NULL, NULL, NULL, LVSTOR_NOT_FOUND_IS_POOL)))
        return -1;
    return 0;
}

static int
lvstorRefreshPool(virStoragePoolObj *pool)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *path = NULL;
    g_autofree char *runtimeDirectory = NULL;
    g_autoptr(GVariant) refreshed = NULL;
    g_autoptr(GVariant) props = NULL;
    g_autoptr(GVariant) objects = NULL;
    g_autoptr(GVariant) tree = NULL;
    GVariantIter iter;
    GVariant *interfaces;
    const char *objectPath;

    if (!(path = lvstorPoolPath(def->name)) ||
        !(runtimeDirectory = lvstorRuntimeDirectory()) ||
        !(refreshed = lvstorCall(path, LVSTOR_POOL_IFACE, "Refresh", NULL, "(asa(ss))", NULL,
                                 LVSTOR_NOT_FOUND_IS_POOL)) ||
        !(props = lvstorGetAll(path, LVSTOR_POOL_IFACE, LVSTOR_NOT_FOUND_IS_POOL)))
        return -1;

    def->capacity = lvstorDictU64(props, "Capacity");
    def->allocation = lvstorDictU64(props, "Allocation");
    def->available = lvstorDictU64(props, "Available");

    /* One round trip for every volume's properties. */
    if (!(objects = lvstorCall(LVSTOR_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects", NULL, "(a{oa{sa{sv}}})", NULL, LVSTOR_NOT_FOUND_IS_POOL)))
        return -1;
    tree = g_variant_get_child_value(objects, 0);
    g_variant_iter_init(&iter, tree);
    while (g_variant_iter_next(&iter, "{&o@a{sa{sv}}}", &objectPath, &interfaces)) {
        g_autoptr(GVariant) owned = interfaces;
        g_autoptr(GVariant) volume = g_variant_lookup_value(owned, LVSTOR_VOLUME_IFACE, G_VARIANT_TYPE("a{sv}"));
        virStorageVolDef *vol;

        if (!volume || !g_str_equal(lvstorDictString(volume, "PoolName"), def->name))
            continue;
        vol = lvstorNewVolDef(volume, runtimeDirectory, def->name);
        if (virStoragePoolObjAddVol(pool, vol) < 0) {
            virReportError(VIR_ERR_INTERNAL_ERROR, "cannot list volume '%s' (%s) of pool '%s'",
                           vol->name, objectPath, def->name);
            virStorageVolDefFree(vol);
            return -1;
        }
    }
    return 0;
}

static int
lvstorStopPool(virStoragePoolObj *pool)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autofree char *path = NULL;

    reply = lvstorCallQuiet(LVSTOR_MANAGER_PATH, LVSTOR_MANAGER_IFACE, "GetPool", g_variant_new("(s)", def->name),
                            "(o)", NULL, &err);
    if (reply) {
        g_variant_get(reply, "(o)", &path);
        g_clear_pointer(&reply, g_variant_unref);
        reply = lvstorCallQuiet(path, LVSTOR_POOL_IFACE, "Stop", NULL, NULL, NULL, &err);
    }
    if (reply)
        return 0;
    /* Nothing to stop: lvstord is down (its sockets are gone with it), forgot the pool, or already stopped it
     * (Invalid). A guest still connected (InUse) and everything else keeps the pool running. */
    if (lvstorErrorIsNotRunning(err) || lvstorErrorIs(err, "NotFound") || lvstorErrorIs(err, "Invalid")) {
        VIR_WARN("pool '%s' stopped in libvirt only: %s", def->name, err->message);
        return 0;
    }
    lvstorReportError("lvstord Pool.Stop", err, LVSTOR_NOT_FOUND_IS_POOL);
    return -1;
}

/* ------------------------------------------------------------------ */
/* volumes                                                             */

/* libvirt needs the key and path before the volume exists (virGetStorageVol, the pool's lookup tables), and
 * vol-clone reuses the source's XML, path included. Both are therefore the socket lvstord will give the
 * volume, <runtime-dir>/<pool>/<name>.sock: known in advance, unique on the host, stable for the volume's
 * life; lvstord's own key (a UUID) is not known until the volume exists. */
static int
lvstorCreateVol(virStoragePoolObj *pool, virStorageVolDef *vol)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *runtimeDirectory = NULL;
    g_autofree char *poolPath = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GError) err = NULL;

    if (!g_utf8_validate(vol->name, -1, NULL)) {
        virReportError(VIR_ERR_INVALID_ARG, "%s", "volume names must be UTF-8");
        return -1;
    }
    if (!(runtimeDirectory = lvstorRuntimeDirectory()) || !(poolPath = lvstorPoolPath(def->name)))
        return -1;
    reply = lvstorCallQuiet(poolPath, LVSTOR_POOL_IFACE, "GetVolume", g_variant_new("(s)", vol->name),
                            "(o)", NULL, &err);
    if (reply) {
        virReportError(VIR_ERR_STORAGE_VOL_EXIST, "'%s'", vol->name);
        return -1;
    }
    if (!lvstorErrorIs(err, "NotFound")) {
        lvstorReportError("lvstord Pool.GetVolume", err, LVSTOR_NOT_FOUND_IS_VOLUME);
        return -1;
    }

    vol->type = VIR_STORAGE_VOL_FILE;
    vol->target.type = VIR_STORAGE_TYPE_FILE;
    g_free(vol->target.path);
    vol->target.path = lvstorSocketPath(runtimeDirectory, def->name, vol->name);
    g_free(vol->key);
    vol->key = g_strdup(vol->target.path);
    return 0;
}

/* The name of the volume a <backingStore><path> names: its socket path (as vol-path prints it), or a
 * plain volume name of the same pool. */
static char *
lvstorBackingVolumeName(virStoragePoolDef *def, const char *backingPath)
{
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) props = NULL;
    g_autofree char *path = NULL;

    if (backingPath[0] != '/')
        return g_strdup(backingPath);
    if (!(reply = lvstorCall(LVSTOR_MANAGER_PATH, LVSTOR_MANAGER_IFACE, "GetVolumeByPath",
                             g_variant_new("(s)", backingPath), "(o)", NULL, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return NULL;
    g_variant_get(reply, "(o)", &path);
    if (!(props = lvstorGetAll(path, LVSTOR_VOLUME_IFACE, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return NULL;
    if (!g_str_equal(lvstorDictString(props, "PoolName"), def->name)) {
        virReportError(VIR_ERR_INVALID_ARG, "backing volume '%s' is in pool '%s', not in '%s': a backing "
                       "volume must be in the same pool", backingPath, lvstorDictString(props, "PoolName"),
                       def->name);
        return NULL;
    }
    return g_strdup(lvstorDictString(props, "Name"));
}

static int
lvstorBuildVol(virStoragePoolObj *pool, virStorageVolDef *vol, unsigned int flags)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *poolPath = NULL;
    g_autofree char *backing = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GError) err = NULL;
    const char *format;

    /* lvstord makes qcow2 metadata only and raw files sparse, so preallocating metadata is what it does. */
    virCheckFlags(VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA, -1);

    format = vol->target.format == VIR_STORAGE_FILE_NONE ? "" : virStorageFileFormatTypeToString(vol->target.format);
    if (!format || (*format && !g_str_equal(format, "raw") && !g_str_equal(format, "qcow2"))) {
        virReportError(VIR_ERR_INVALID_ARG, "volume format '%s' is not supported: use raw or qcow2",
                       NULLSTR(format));
        return -1;
    }
    if (virStorageSourceHasBacking(&vol->target) &&
        !(backing = lvstorBackingVolumeName(def, vol->target.backingStore->path)))
        return -1;
    if (!*format)
        format = backing ? "qcow2" : "raw";

    if (!(poolPath = lvstorPoolPath(def->name)))
        return -1;
    if (!(reply = lvstorCallQuiet(poolPath, LVSTOR_POOL_IFACE, "CreateVolume",
                                  g_variant_new("(sstsa{sv})", vol->name, format, (guint64) vol->target.capacity,
                                                backing ? backing : "", NULL),
                                  "(o)", NULL, &err))) {
        lvstorReportVolumeError("lvstord Pool.CreateVolume", vol->name, err);
        return -1;
    }
    return 0;
}

/* Starts a job method on a volume and waits for it; createdVolume names the volume a clone makes. */
static int
lvstorRunVolumeJob(const char *pool, const char *volume, const char *method, GVariant *args,
                   const char *createdVolume)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *path = NULL;
    g_autofree char *jobPath = NULL;
    g_autofree char *what = NULL;
    g_autoptr(GVariant) reply = NULL;

    if (!(path = lvstorVolumePath(pool, volume))) {
        if (args)
            g_variant_unref(g_variant_ref_sink(args));
        return -1;
    }
    what = g_strdup_printf("%s of volume '%s'", method, volume);
    if (!(reply = lvstorCallQuiet(path, LVSTOR_VOLUME_IFACE, method, args, "(o)", NULL, &err))) {
        lvstorReportVolumeError(what, createdVolume ? createdVolume : volume, err);
        return -1;
    }
    g_variant_get(reply, "(o)", &jobPath);
    return lvstorWaitJob(what, jobPath, NULL);
}

/* Clones that failed before lvstord made anything. libvirt cleans up a failed vol-clone by calling deleteVol
 * for the new name; that must not delete a volume of that name someone else made meanwhile. */
static GMutex failedClonesLock;
static GHashTable *failedClones; /* "pool/volume" */

static char *
lvstorCloneId(virStoragePoolDef *def, const char *volume)
{
    return g_strdup_printf("%s/%s", def->name, volume);
}

static void
lvstorRememberFailedClone(virStoragePoolDef *def, const char *volume)
{
    g_mutex_lock(&failedClonesLock);
    if (!failedClones)
        failedClones = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_hash_table_add(failedClones, lvstorCloneId(def, volume));
    g_mutex_unlock(&failedClonesLock);
}

static bool
lvstorForgetFailedClone(virStoragePoolDef *def, const char *volume)
{
    g_autofree char *id = lvstorCloneId(def, volume);
    bool found;

    g_mutex_lock(&failedClonesLock);
    found = failedClones && g_hash_table_remove(failedClones, id);
    g_mutex_unlock(&failedClonesLock);
    return found;
}

/* vol-clone: libvirt passes the new volume's definition (from createVol) and the source's. */
static int
lvstorBuildVolFrom(virStoragePoolObj *pool, virStorageVolDef *newvol, virStorageVolDef *origvol,
                   unsigned int flags)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    const char *format = "";

    virCheckFlags(VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA | VIR_STORAGE_VOL_CREATE_REFLINK, -1);

    if (newvol->target.format != VIR_STORAGE_FILE_NONE &&
        newvol->target.format != origvol->target.format &&
        !(format = virStorageFileFormatTypeToString(newvol->target.format)))
        format = "";
    if (lvstorRunVolumeJob(def->name, origvol->name, "Clone",
                           g_variant_new("(sss)", newvol->name, "full", format), newvol->name) < 0) {
        lvstorRememberFailedClone(def, newvol->name); /* a failed clone job removes its partial target */
        return -1;
    }

    /* libvirt lets the new volume's XML ask for more capacity than the source has. */
    if (newvol->target.capacity > origvol->target.capacity) {
        g_autofree char *path = lvstorVolumePath(def->name, newvol->name);
        g_autoptr(GVariant) reply = NULL;

        if (!path ||
            !(reply = lvstorCall(path, LVSTOR_VOLUME_IFACE, "Resize",
                                 g_variant_new("(tb)", (guint64) newvol->target.capacity, FALSE),
                                 NULL, NULL, LVSTOR_NOT_FOUND_IS_VOLUME)))
            return -1;
    }
    return 0;
}

static int
lvstorRefreshVol(virStoragePoolObj *pool, virStorageVolDef *vol)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *runtimeDirectory = NULL;
    g_autofree char *path = NULL;
    g_autoptr(GVariant) props = NULL;

    if (!(runtimeDirectory = lvstorRuntimeDirectory()) ||
        !(path = lvstorVolumePath(def->name, vol->name)) ||
        !(props = lvstorGetAll(path, LVSTOR_VOLUME_IFACE, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return -1;
    if (!g_str_equal(lvstorDictString(props, "Path"), NULLSTR_EMPTY(vol->target.path)))
        VIR_WARN("volume '%s': lvstord's socket is %s, libvirt has %s; run pool-refresh",
                 vol->name, lvstorDictString(props, "Path"), NULLSTR(vol->target.path));
    lvstorFillVolDef(vol, props, runtimeDirectory, def->name);
    return 0;
}

static int
lvstorDeleteVol(virStoragePoolObj *pool, virStorageVolDef *vol, unsigned int flags)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *poolPath = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) deleted = NULL;
    g_autofree char *path = NULL;

    virCheckFlags(0, -1);

    if (lvstorForgetFailedClone(def, vol->name))
        return 0;
    if (!(poolPath = lvstorPoolPath(def->name)))
        return -1;
    reply = lvstorCallQuiet(poolPath, LVSTOR_POOL_IFACE, "GetVolume", g_variant_new("(s)", vol->name),
                            "(o)", NULL, &err);
    /* Already gone: nothing to delete. */
    if (!reply && lvstorErrorIs(err, "NotFound"))
        return 0;
    if (!reply) {
        lvstorReportError("lvstord Pool.GetVolume", err, LVSTOR_NOT_FOUND_IS_VOLUME);
        return -1;
    }
    g_variant_get(reply, "(o)", &path);
    if (!(deleted = lvstorCall(path, LVSTOR_VOLUME_IFACE, "Delete", NULL, NULL, NULL, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return -1;
    return 0;
}

static int
lvstorResizeVol(virStoragePoolObj *pool, virStorageVolDef *vol, unsigned long long capacity,
                unsigned int flags)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *path = NULL;
    g_autoptr(GVariant) reply = NULL;

    /* --delta arrives already turned into an absolute capacity by libvirt. */
    virCheckFlags(VIR_STORAGE_VOL_RESIZE_ALLOCATE | VIR_STORAGE_VOL_RESIZE_DELTA |
                  VIR_STORAGE_VOL_RESIZE_SHRINK, -1);
    if (flags & VIR_STORAGE_VOL_RESIZE_ALLOCATE) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED, "%s",
                       "lvstord keeps volumes sparse: --allocate is not supported");
        return -1;
    }
    if (!(path = lvstorVolumePath(def->name, vol->name)) ||
        !(reply = lvstorCall(path, LVSTOR_VOLUME_IFACE, "Resize",
                             g_variant_new("(tb)", (guint64) capacity,
                                           (flags & VIR_STORAGE_VOL_RESIZE_SHRINK) != 0),
                             NULL, NULL, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return -1;
    return 0;
}

static int
lvstorWipeVol(virStoragePoolObj *pool, virStorageVolDef *vol, unsigned int algorithm, unsigned int flags)
{
    virCheckFlags(0, -1);
    if (algorithm != VIR_STORAGE_VOL_WIPE_ALG_ZERO) {
        virReportError(VIR_ERR_OPERATION_UNSUPPORTED, "%s",
                       "lvstord wipes with zeroes only: use --algorithm zero (the default)");
        return -1;
    }
    return lvstorRunVolumeJob(virStoragePoolObjGetDef(pool)->name, vol->name, "Wipe", NULL, NULL);
}

/* Waits for an upload or download job in the background: the callback must return for libvirt to start
 * moving the stream, and the job ends when the stream's end of the socket closes. */
typedef struct {
    char *what;
    char *jobPath;
} lvstorTransfer;

static gpointer
lvstorWatchTransfer(gpointer opaque)
{
    lvstorTransfer *transfer = opaque;

    if (lvstorWaitJob(transfer->what, transfer->jobPath, NULL) < 0) {
        VIR_ERROR("%s failed: %s", transfer->what, virGetLastErrorMessage());
        virResetLastError();
    }
    g_free(transfer->what);
    g_free(transfer->jobPath);
    g_free(transfer);
    return NULL;
}

static void
lvstorClose(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Hands one end of a socket pair to lvstord's Upload/Download job and the other to libvirt's fd stream. */
static int
lvstorStreamVol(virStoragePoolObj *pool, virStorageVolDef *vol, virStreamPtr stream,
                const char *method, unsigned long long offset, unsigned long long length)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *path = NULL;
    g_autoptr(GUnixFDList) fds = NULL;
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GError) err = NULL;
    lvstorTransfer *transfer;
    int pair[2];

    if (!(path = lvstorVolumePath(def->name, vol->name)))
        return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        virReportSystemError(errno, "%s", "cannot create a socket pair for the volume stream");
        return -1;
    }
    fds = g_unix_fd_list_new();
    if (g_unix_fd_list_append(fds, pair[1], &err) < 0) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "cannot pass the stream's socket: %s", err->message);
        goto error;
    }
    lvstorClose(&pair[1]); /* lvstord holds its own copy now; EOF reaches it when libvirt closes ours */
    if (!(reply = lvstorCall(path, LVSTOR_VOLUME_IFACE, method,
                             g_variant_new("(htt)", 0, (guint64) offset, (guint64) length),
                             "(o)", fds, LVSTOR_NOT_FOUND_IS_VOLUME)))
        goto error;
    g_clear_object(&fds);

    if (virFDStreamOpen(stream, pair[0]) < 0)
        goto error;

    transfer = g_new0(lvstorTransfer, 1);
    transfer->what = g_strdup_printf("%s of volume '%s'", method, vol->name);
    g_variant_get(reply, "(o)", &transfer->jobPath);
    g_thread_unref(g_thread_new("lvstor-transfer", lvstorWatchTransfer, transfer));
    return 0;

 error:
    lvstorClose(&pair[0]);
    lvstorClose(&pair[1]);
    return -1;
}

/* ------------------------------------------------------------------ */
/* sparse streams (vol-upload/vol-download --sparse)                   */

/* libvirt's fd stream finds and makes holes only in a regular file (SEEK_DATA/SEEK_HOLE, lseek+ftruncate),
 * never in a socket. So a sparse transfer goes through an unlinked temporary file: lvstord writes a download
 * into it sparsely before libvirt reads it, and imports an upload from it after libvirt has written it.
 * The file lives in LVSTOR_SPARSE_TMPDIR (libvirtd's environment), by default /var/tmp: it holds the
 * transfer's data extents only, and vanishes with its last descriptor. */
#define LVSTOR_SPARSE_TMPDIR_DEFAULT "/var/tmp"

static const char *
lvstorSparseDirectory(void)
{
    const char *dir = g_getenv("LVSTOR_SPARSE_TMPDIR");
    return dir && *dir ? dir : LVSTOR_SPARSE_TMPDIR_DEFAULT;
}

/* An unlinked regular file opened read-write; -1 with an error reported. */
static int
lvstorOpenSparseFile(void)
{
    const char *dir = lvstorSparseDirectory();
    g_autofree char *name = NULL;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

    /* Filesystems without O_TMPFILE: a named file, unlinked at once. */
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        name = g_build_filename(dir, "lvstor-sparse-XXXXXX", NULL);
        if ((fd = g_mkstemp_full(name, O_RDWR | O_CLOEXEC, 0600)) >= 0)
            unlink(name);
    }
    if (fd < 0)
        virReportSystemError(errno, "cannot create a temporary file in %s for the sparse stream "
                             "(set LVSTOR_SPARSE_TMPDIR in libvirtd's environment to another directory)", dir);
    return fd;
}

/* The path libvirt's fd stream opens: a fresh open of our descriptor's file, with its own position. */
static char *
lvstorSparseFilePath(int fd)
{
    return g_strdup_printf("/proc/self/fd/%d", fd);
}

/* Starts a job method of lvstord's Volume whose handles are fds; returns the job's path or NULL with an error
 * reported. */
static char *
lvstorStartFdJob(const char *pool, const char *volume, const char *method, GVariant *args, const int *fds,
                 size_t nfds)
{
    g_autofree char *path = NULL;
    g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GError) err = NULL;
    char *jobPath = NULL;
    size_t i;

    for (i = 0; i < nfds; i++) {
        if (g_unix_fd_list_append(list, fds[i], &err) < 0) {
            virReportError(VIR_ERR_INTERNAL_ERROR, "cannot pass a descriptor to lvstord: %s", err->message);
            g_variant_unref(g_variant_ref_sink(args));
            return NULL;
        }
    }
    if (!(path = lvstorVolumePath(pool, volume))) {
        g_variant_unref(g_variant_ref_sink(args));
        return NULL;
    }
    if (!(reply = lvstorCall(path, LVSTOR_VOLUME_IFACE, method, args, "(o)", list, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return NULL;
    g_variant_get(reply, "(o)", &jobPath);
    return jobPath;
}

/* Download: lvstord writes the range into the file (data extents only; holes stay holes), then libvirt's
 * fd stream serves the file with its holes. The client waits for lvstord's copy before the first byte. */
static int
lvstorDownloadSparse(virStoragePoolObj *pool, virStorageVolDef *vol, virStreamPtr stream,
                     unsigned long long offset, unsigned long long length)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *jobPath = NULL;
    g_autofree char *what = NULL;
    g_autofree char *filePath = NULL;
    int fd;
    int ret = -1;

    if ((fd = lvstorOpenSparseFile()) < 0)
        return -1;
    what = g_strdup_printf("Download of volume '%s'", vol->name);
    if (!(jobPath = lvstorStartFdJob(def->name, vol->name, "Download",
                                     g_variant_new("(htt)", 0, (guint64) offset, (guint64) length), &fd, 1)) ||
        lvstorWaitJob(what, jobPath, NULL) < 0)
        goto cleanup;

    filePath = lvstorSparseFilePath(fd);
    if (virFDStreamOpenBlockDevice(stream, filePath, 0, 0, true, O_RDONLY) < 0)
        goto cleanup;
    ret = 0;

 cleanup:
    lvstorClose(&fd); /* libvirt's stream has its own open file now */
    return ret;
}

/* Upload: libvirt's fd stream writes the client's data and holes into the file, and lvstord imports it (its
 * holes become zeroes, unallocated where the format allows). lvstord's UploadStaged job starts at once, so it
 * checks and claims the volume before the client sends anything (as a plain upload does), but reads the file
 * only when the module sends a byte on the ready socket: after the client finished the stream. An aborted or
 * failed stream closes the socket without that byte: the job ends cancelled and writes nothing.
 * libvirt tells a backend nothing when a stream ends (storageVolUpload takes the fd stream's only internal
 * close callback for its pool refresh), so the module sees the stream's finish and abort by wrapping its
 * driver: a copy of libvirt's fd stream driver with those two replaced. */
typedef struct {
    char *volume;
    char *jobPath;
    int file;   /* the temporary file (lvstord has its own descriptor of it) */
    int ready;  /* our end of the ready socket */
} lvstorSparseUpload;

static GMutex sparseUploadsLock;
static GHashTable *sparseUploads; /* virStreamPtr -> lvstorSparseUpload */
static virStreamDriver *fdStreamDriver;      /* libvirt's, what the wrapper forwards to */
static virStreamDriver sparseUploadDriver;   /* the wrapper */

static void
lvstorSparseUploadFree(lvstorSparseUpload *upload)
{
    if (!upload)
        return;
    lvstorClose(&upload->file);
    lvstorClose(&upload->ready); /* without the byte, lvstord's job ends cancelled */
    g_free(upload->volume);
    g_free(upload->jobPath);
    g_free(upload);
}

static lvstorSparseUpload *
lvstorTakeSparseUpload(virStreamPtr stream)
{
    lvstorSparseUpload *upload = NULL;

    g_mutex_lock(&sparseUploadsLock);
    /* Not g_hash_table_steal_extended: libvirt's glibcompat.h renames it to a symbol libvirt does not export. */
    if (sparseUploads && (upload = g_hash_table_lookup(sparseUploads, stream)))
        g_hash_table_remove(sparseUploads, stream);
    g_mutex_unlock(&sparseUploadsLock);
    return upload;
}

/* Runs on libvirtd's event loop (the client's finish message), so it does not wait for the import: it lets
 * lvstord's job go and leaves it to a watcher thread, like a plain upload's job. */
static int
lvstorSparseUploadFinish(virStreamPtr stream)
{
    lvstorSparseUpload *upload = lvstorTakeSparseUpload(stream);
    lvstorTransfer *transfer;
    int ret;

    ret = fdStreamDriver->streamFinish(stream); /* flushes the client's last bytes into the file */
    if (!upload || ret < 0)
        goto cleanup;

    if (send(upload->ready, "1", 1, MSG_NOSIGNAL) != 1) {
        virReportSystemError(errno, "lvstord gave up the upload to volume '%s' (see its job %s)",
                             upload->volume, upload->jobPath);
        ret = -1;
        goto cleanup;
    }
    transfer = g_new0(lvstorTransfer, 1);
    transfer->what = g_strdup_printf("Upload of volume '%s'", upload->volume);
    transfer->jobPath = g_steal_pointer(&upload->jobPath);
    g_thread_unref(g_thread_new("lvstor-transfer", lvstorWatchTransfer, transfer));

 cleanup:
    lvstorSparseUploadFree(upload);
    return ret;
}

static int
lvstorSparseUploadAbort(virStreamPtr stream)
{
    lvstorSparseUpload *upload = lvstorTakeSparseUpload(stream);
    int ret = fdStreamDriver->streamAbort(stream);

    if (upload)
        VIR_INFO("sparse upload to volume '%s' aborted: lvstord's job %s writes nothing", upload->volume,
                 upload->jobPath);
    lvstorSparseUploadFree(upload);
    return ret;
}

/* Puts the wrapper in front of the fd stream libvirt just opened on stream. */
static int
lvstorWrapSparseUpload(virStreamPtr stream, lvstorSparseUpload *upload)
{
    g_mutex_lock(&sparseUploadsLock);
    if (!fdStreamDriver) {
        fdStreamDriver = stream->driver;
        sparseUploadDriver = *stream->driver;
        sparseUploadDriver.streamFinish = lvstorSparseUploadFinish;
        sparseUploadDriver.streamAbort = lvstorSparseUploadAbort;
        sparseUploads = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    if (stream->driver != fdStreamDriver || !fdStreamDriver->streamFinish || !fdStreamDriver->streamAbort) {
        g_mutex_unlock(&sparseUploadsLock);
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s", "unexpected stream driver for a sparse upload");
        return -1;
    }
    g_hash_table_insert(sparseUploads, stream, upload);
    stream->driver = &sparseUploadDriver;
    g_mutex_unlock(&sparseUploadsLock);
    return 0;
}

static int
lvstorUploadSparse(virStoragePoolObj *pool, virStorageVolDef *vol, virStreamPtr stream,
                   unsigned long long offset, unsigned long long length)
{
    virStoragePoolDef *def = virStoragePoolObjGetDef(pool);
    g_autofree char *path = NULL;
    g_autofree char *filePath = NULL;
    g_autoptr(GVariant) props = NULL;
    lvstorSparseUpload *upload;
    guint64 capacity;
    int pair[2] = { -1, -1 };
    int fds[2];

    /* libvirt's stream must stop the client at the end of the range: it needs the volume's capacity. */
    if (!(path = lvstorVolumePath(def->name, vol->name)) ||
        !(props = lvstorGetAll(path, LVSTOR_VOLUME_IFACE, LVSTOR_NOT_FOUND_IS_VOLUME)))
        return -1;
    capacity = lvstorDictU64(props, "Capacity");
    if (offset >= capacity) { /* lvstord would take it, but libvirt reads length 0 as "no limit" */
        virReportError(VIR_ERR_INVALID_ARG, "range at offset %llu is outside volume '%s' (%llu bytes)",
                       offset, vol->name, (unsigned long long) capacity);
        return -1;
    }

    upload = g_new0(lvstorSparseUpload, 1);
    upload->volume = g_strdup(vol->name);
    upload->ready = -1;
    if ((upload->file = lvstorOpenSparseFile()) < 0)
        goto error;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        virReportSystemError(errno, "%s", "cannot create the ready socket of a sparse upload");
        goto error;
    }
    upload->ready = pair[0];
    fds[0] = upload->file;
    fds[1] = pair[1];
    /* lvstord checks the volume (busy, read-only, a connected guest) and the range, and claims the volume. */
    if (!(upload->jobPath = lvstorStartFdJob(def->name, vol->name, "UploadStaged",
                                             g_variant_new("(hhtt)", 0, 1, (guint64) offset, (guint64) length),
                                             fds, 2)))
        goto error;
    lvstorClose(&pair[1]);

    filePath = lvstorSparseFilePath(upload->file);
    if (virFDStreamOpenBlockDevice(stream, filePath, 0, length ? length : capacity - offset, true, O_WRONLY) < 0)
        goto error;
    if (lvstorWrapSparseUpload(stream, upload) < 0) {
        stream->driver->streamAbort(stream); /* not virStreamAbort: that would reset the error */
        goto error;
    }
    return 0;

 error:
    lvstorClose(&pair[1]);
    lvstorSparseUploadFree(upload); /* closes the ready socket: a started job ends cancelled */
    return -1;
}

static int
lvstorUploadVol(virStoragePoolObj *pool, virStorageVolDef *vol, virStreamPtr stream,
                unsigned long long offset, unsigned long long length, unsigned int flags)
{
    virCheckFlags(VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM, -1);
    if (flags & VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        return lvstorUploadSparse(pool, vol, stream, offset, length);
    return lvstorStreamVol(pool, vol, stream, "Upload", offset, length);
}

static int
lvstorDownloadVol(virStoragePoolObj *pool, virStorageVolDef *vol, virStreamPtr stream,
                  unsigned long long offset, unsigned long long length, unsigned int flags)
{
    virCheckFlags(VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM, -1);
    if (flags & VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        return lvstorDownloadSparse(pool, vol, stream, offset, length);
    return lvstorStreamVol(pool, vol, stream, "Download", offset, length);
}

static virStorageBackend lvstorBackend = {
    .type = VIR_STORAGE_POOL_VSTORAGE,

    .checkPool = lvstorCheckPool,
    .startPool = lvstorStartPool,
    .refreshPool = lvstorRefreshPool,
    .stopPool = lvstorStopPool,

    .createVol = lvstorCreateVol,
    .buildVol = lvstorBuildVol,
    .buildVolFrom = lvstorBuildVolFrom,
    .refreshVol = lvstorRefreshVol,
    .deleteVol = lvstorDeleteVol,
    .resizeVol = lvstorResizeVol,
    .uploadVol = lvstorUploadVol,
    .downloadVol = lvstorDownloadVol,
    .wipeVol = lvstorWipeVol,
};

/* ------------------------------------------------------------------ */
/* registration                                                        */

/* True when the libvirt we run in is the one whose headers laid out the structs we touch. */
static bool
lvstorLibvirtMatches(void)
{
    unsigned long running = 0;

    if (virGetVersion(&running, NULL, NULL) < 0) {
        virResetLastError();
        return false;
    }
    if (running != SHIM_LIBVIRT_VERSION_NUMBER) {
        VIR_ERROR("lvstor storage module built for libvirt %s (%d) but libvirt %lu.%lu.%lu is running: "
                  "pool type vstorage stays unavailable; rebuild the module (make shim) and reinstall it",
                  SHIM_LIBVIRT_DEB_VERSION, SHIM_LIBVIRT_VERSION_NUMBER,
                  running / 1000000, (running / 1000) % 1000, running % 1000);
        return false;
    }
    return true;
}

int lvstorStorageBackendRegister(void);

/* Called by the loader (loader.c) once it has checked the libvirt version. Returns 0 whatever happens: a
 * failing register stops libvirtd. No D-Bus here either: lvstord may start after libvirtd. */
int
lvstorStorageBackendRegister(void)
{
    if (!lvstorLibvirtMatches())
        return 0;
    if (virStorageBackendRegister(&lvstorBackend) < 0) {
        VIR_ERROR("cannot register the lvstor backend for pool type vstorage: %s", virGetLastErrorMessage());
        virResetLastError();
        return 0;
    }
    VIR_INFO("lvstor backend registered for pool type vstorage (built for libvirt %s)", SHIM_LIBVIRT_DEB_VERSION);
    return 0;
}
