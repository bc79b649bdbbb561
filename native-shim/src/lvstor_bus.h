/*
 * lvstor_bus.h: the module's client of lvstord's D-Bus API (org.lvstor.Storage1, docs/dbus-api.md).
 *
 * Every function that talks to lvstord reports a libvirt error (virReportError) and returns -1 or NULL on
 * failure, so the backend callbacks only pass the failure on.
 */
#pragma once

#include <gio/gio.h>

#define LVSTOR_BUS_NAME "org.lvstor.Storage1"
#define LVSTOR_MANAGER_PATH "/org/lvstor/Storage1"
#define LVSTOR_MANAGER_IFACE "org.lvstor.Storage1.Manager"
#define LVSTOR_POOL_IFACE "org.lvstor.Storage1.Pool"
#define LVSTOR_VOLUME_IFACE "org.lvstor.Storage1.Volume"
#define LVSTOR_JOB_IFACE "org.lvstor.Storage1.Job"

/* Plain calls answer at once; a daemon that does not answer within this is treated as hung. */
#define LVSTOR_CALL_TIMEOUT_MS 10000

/* What a NotFound reply means for the caller: which libvirt error code to report. */
typedef enum {
    LVSTOR_NOT_FOUND_IS_POOL,
    LVSTOR_NOT_FOUND_IS_VOLUME,
} lvstorNotFoundKind;

/* A method call; returns the reply (never NULL on success) or NULL with a libvirt error reported.
 * fds_in: optional fds to pass (dup'ed; the caller keeps its own). */
GVariant *lvstorCall(const char *path, const char *iface, const char *method, GVariant *args,
                     const char *replyType, GUnixFDList *fds_in, lvstorNotFoundKind notFound);

/* Like lvstorCall, but fills *err instead of reporting, so callers can treat some errors as expected. */
GVariant *lvstorCallQuiet(const char *path, const char *iface, const char *method, GVariant *args,
                          const char *replyType, GUnixFDList *fds_in, GError **err);

/* Reports a GError from a call (or a job) as the matching libvirt error. */
void lvstorReportError(const char *what, GError *err, lvstorNotFoundKind notFound);

/* Like lvstorReportError for a call that creates the named volume: Exists becomes VIR_ERR_STORAGE_VOL_EXIST. */
void lvstorReportVolumeError(const char *what, const char *volume, GError *err);

/* Reports a failed job from its ErrorName and ErrorMessage properties. */
void lvstorReportJobError(const char *what, const char *errorName, const char *errorMessage);

/* True when err is lvstord's org.lvstor.Storage1.Error.<kind>. */
gboolean lvstorErrorIs(GError *err, const char *kind);

/* True when err says lvstord (or the system bus) is not there at all. */
gboolean lvstorErrorIsNotRunning(GError *err);

/* All properties of one interface of an object, as a{sv}; NULL with an error reported. */
GVariant *lvstorGetAll(const char *path, const char *iface, lvstorNotFoundKind notFound);

/* Manager.GetPool / Pool.GetVolume; NULL with an error reported. */
char *lvstorPoolPath(const char *pool);
char *lvstorVolumePath(const char *pool, const char *volume);

/* Manager.RuntimeDirectory (where the export sockets live); NULL with an error reported. */
char *lvstorRuntimeDirectory(void);

/* The export socket lvstord gives a volume: <runtime-dir>/<pool>/<volume>.sock (StorageNames.SocketPath). */
char *lvstorSocketPath(const char *runtimeDirectory, const char *pool, const char *volume);

/* Waits until the job at jobPath leaves "running". No overall time limit (a clone of a big volume takes as
 * long as it takes), but every poll also proves lvstord is still on the bus. Returns 0 when the job
 * completed, -1 with its error reported otherwise. resultPath (optional) receives the job's Result. */
int lvstorWaitJob(const char *what, const char *jobPath, char **resultPath);

/* Looks up a string or u64 in an a{sv}; missing keys give "" or 0. */
const char *lvstorDictString(GVariant *dict, const char *key);
guint64 lvstorDictU64(GVariant *dict, const char *key);
gboolean lvstorDictBool(GVariant *dict, const char *key);
