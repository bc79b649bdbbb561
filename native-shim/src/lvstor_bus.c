/*
 * lvstor_bus.c: GDBus client of lvstord (org.lvstor.Storage1) for the libvirt storage module.
 *
 * One private connection to the system bus, shared by all libvirtd worker threads (GDBusConnection is
 * thread-safe and does its I/O in GDBus's own thread, so blocking calls need no main loop here). It is a
 * private connection rather than g_bus_get_sync()'s singleton so that we never touch the shared connection
 * libvirt itself may use, and it is reopened when the bus went away (dbus-daemon restarted).
 */
#include <config.h>

#include <gio/gunixfdlist.h>

#include "internal.h"
#include "virerror.h"
#include "virlog.h"

#include "lvstor_bus.h"

#define VIR_FROM_THIS VIR_FROM_STORAGE

VIR_LOG_INIT("storage.storage_backend_lvstor.bus");

#define LVSTOR_ERROR_PREFIX "org.lvstor.Storage1.Error."
#define LVSTOR_NOT_RUNNING \
    "lvstord is not running on the system bus: start it with systemctl start lvstord"

static GMutex connectionLock;
static GDBusConnection *connection;

/* Returns a new reference to the shared connection, opening it first if needed. */
static GDBusConnection *
lvstorConnection(GError **err)
{
    g_autofree char *address = NULL;
    GDBusConnection *result = NULL;

    g_mutex_lock(&connectionLock);
    if (connection && g_dbus_connection_is_closed(connection))
        g_clear_object(&connection);
    if (!connection &&
        (address = g_dbus_address_get_for_bus_sync(G_BUS_TYPE_SYSTEM, NULL, err))) {
        connection = g_dbus_connection_new_for_address_sync(address,
                         G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                         G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                         NULL, NULL, err);
        if (connection)
            g_dbus_connection_set_exit_on_close(connection, FALSE);
        else
            g_prefix_error(err, "cannot connect to the system bus at %s: ", address);
    }
    if (connection)
        result = g_object_ref(connection);
    g_mutex_unlock(&connectionLock);
    return result;
}

GVariant *
lvstorCallQuiet(const char *path, const char *iface, const char *method, GVariant *args,
                const char *replyType, GUnixFDList *fds_in, GError **err)
{
    g_autoptr(GDBusConnection) conn = NULL;
    GVariant *reply;

    if (!(conn = lvstorConnection(err))) {
        if (args)
            g_variant_unref(g_variant_ref_sink(args));
        return NULL;
    }
    reply = g_dbus_connection_call_with_unix_fd_list_sync(conn, LVSTOR_BUS_NAME, path, iface, method, args,
                                                          replyType ? G_VARIANT_TYPE(replyType) : NULL,
                                                          G_DBUS_CALL_FLAGS_NO_AUTO_START,
                                                          LVSTOR_CALL_TIMEOUT_MS, fds_in, NULL, NULL, err);
    VIR_DEBUG("%s.%s on %s: %s", iface, method, path, reply ? "ok" : (*err)->message);
    return reply;
}

gboolean
lvstorErrorIs(GError *err, const char *kind)
{
    g_autofree char *name = NULL;

    if (!err || !g_dbus_error_is_remote_error(err))
        return FALSE;
    name = g_dbus_error_get_remote_error(err);
    return g_str_has_prefix(name, LVSTOR_ERROR_PREFIX) &&
        g_str_equal(name + strlen(LVSTOR_ERROR_PREFIX), kind);
}

gboolean
lvstorErrorIsNotRunning(GError *err)
{
    g_autofree char *name = NULL;

    if (!err)
        return FALSE;
    if (!g_dbus_error_is_remote_error(err))
        return !g_error_matches(err, G_IO_ERROR, G_IO_ERROR_TIMED_OUT); /* no bus, or it closed */
    name = g_dbus_error_get_remote_error(err);
    return g_str_equal(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
        g_str_equal(name, "org.freedesktop.DBus.Error.NameHasNoOwner") ||
        g_str_equal(name, "org.freedesktop.DBus.Error.Disconnected");
}

/* Maps org.lvstor.Storage1.Error.<kind> to the libvirt error code virsh users expect. */
static int
lvstorErrorCode(const char *kind, lvstorNotFoundKind notFound)
{
    if (g_str_equal(kind, "NotFound"))
        return notFound == LVSTOR_NOT_FOUND_IS_POOL ? VIR_ERR_NO_STORAGE_POOL : VIR_ERR_NO_STORAGE_VOL;
    if (g_str_equal(kind, "Exists"))
        return VIR_ERR_OPERATION_INVALID; /* VIR_ERR_STORAGE_VOL_EXIST's text needs the bare name: see below */
    if (g_str_equal(kind, "InUse"))
        return VIR_ERR_OPERATION_INVALID;
    if (g_str_equal(kind, "Busy"))
        return VIR_ERR_RESOURCE_BUSY;
    if (g_str_equal(kind, "Invalid"))
        return VIR_ERR_INVALID_ARG;
    if (g_str_equal(kind, "Unsupported"))
        return VIR_ERR_OPERATION_UNSUPPORTED;
    if (g_str_equal(kind, "Cancelled"))
        return VIR_ERR_OPERATION_ABORTED;
    if (g_str_equal(kind, "AccessDenied"))
        return VIR_ERR_OPERATION_DENIED;
    return VIR_ERR_OPERATION_FAILED; /* Corrupt, Io and anything newer */
}

static void
lvstorReportRemote(const char *what, const char *name, const char *message, lvstorNotFoundKind notFound)
{
    if (g_str_has_prefix(name, LVSTOR_ERROR_PREFIX)) {
        /* lvstord's messages already say what went wrong and what to do. */
        virReportError(lvstorErrorCode(name + strlen(LVSTOR_ERROR_PREFIX), notFound), "%s", message);
    } else if (g_str_equal(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.NameHasNoOwner") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.Disconnected")) {
        virReportError(VIR_ERR_OPERATION_FAILED, "%s", LVSTOR_NOT_RUNNING);
    } else if (g_str_equal(name, "org.freedesktop.DBus.Error.NoReply") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.Timeout")) {
        virReportError(VIR_ERR_OPERATION_TIMEOUT, "%s: lvstord did not answer within %d s",
                       what, LVSTOR_CALL_TIMEOUT_MS / 1000);
    } else if (g_str_equal(name, "org.freedesktop.DBus.Error.AccessDenied")) {
        virReportError(VIR_ERR_OPERATION_DENIED, "%s: the system bus refused the call: %s", what, message);
    } else if (g_str_equal(name, "org.freedesktop.DBus.Error.UnknownMethod") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.UnknownObject") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.UnknownInterface") ||
               g_str_equal(name, "org.freedesktop.DBus.Error.InvalidArgs")) {
        virReportError(VIR_ERR_INTERNAL_ERROR,
                       "%s: lvstord does not speak the API this module was built for (%s: %s)",
                       what, name, message);
    } else {
        virReportError(VIR_ERR_OPERATION_FAILED, "%s: %s: %s", what, name, message);
    }
}

void
lvstorReportError(const char *what, GError *err, lvstorNotFoundKind notFound)
{
    g_autofree char *name = NULL;

    if (g_dbus_error_is_remote_error(err)) {
        name = g_dbus_error_get_remote_error(err);
        g_dbus_error_strip_remote_error(err);
        lvstorReportRemote(what, name, err->message, notFound);
    } else if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) {
        virReportError(VIR_ERR_OPERATION_TIMEOUT, "%s: lvstord did not answer within %d s",
                       what, LVSTOR_CALL_TIMEOUT_MS / 1000);
    } else if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CLOSED)) {
        virReportError(VIR_ERR_OPERATION_FAILED, "%s", LVSTOR_NOT_RUNNING);
    } else {
        /* Connecting failed: no system bus at all (dbus-daemon is down). */
        virReportError(VIR_ERR_OPERATION_FAILED, "%s: %s (%s)", what, err->message, LVSTOR_NOT_RUNNING);
    }
}

void
lvstorReportJobError(const char *what, const char *errorName, const char *errorMessage)
{
    lvstorReportRemote(what, errorName && *errorName ? errorName : LVSTOR_ERROR_PREFIX "Io",
                       errorMessage && *errorMessage ? errorMessage : "the job failed without a reason",
                       LVSTOR_NOT_FOUND_IS_VOLUME);
}

void
lvstorReportVolumeError(const char *what, const char *volume, GError *err)
{
    if (lvstorErrorIs(err, "Exists")) {
        /* libvirt's shape, "storage volume 'x' (lvstord's reason) exists already". */
        g_dbus_error_strip_remote_error(err);
        virReportError(VIR_ERR_STORAGE_VOL_EXIST, "'%s' (%s)", volume, err->message);
        return;
    }
    lvstorReportError(what, err, LVSTOR_NOT_FOUND_IS_VOLUME);
}

GVariant *
lvstorCall(const char *path, const char *iface, const char *method, GVariant *args,
           const char *replyType, GUnixFDList *fds_in, lvstorNotFoundKind notFound)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *what = NULL;
    GVariant *reply;

    if ((reply = lvstorCallQuiet(path, iface, method, args, replyType, fds_in, &err)))
        return reply;
    if (g_str_equal(iface, "org.freedesktop.DBus.Properties"))
        what = g_strdup_printf("lvstord %s of %s", method, path); /* Get/GetAll: name the object */
    else
        what = g_strdup_printf("lvstord %s.%s", strrchr(iface, '.') + 1, method);
    lvstorReportError(what, err, notFound);
    return NULL;
}

GVariant *
lvstorGetAll(const char *path, const char *iface, lvstorNotFoundKind notFound)
{
    g_autoptr(GVariant) reply = NULL;
    GVariant *dict = NULL;

    if (!(reply = lvstorCall(path, "org.freedesktop.DBus.Properties", "GetAll",
                             g_variant_new("(s)", iface), "(a{sv})", NULL, notFound)))
        return NULL;
    g_variant_get(reply, "(@a{sv})", &dict);
    return dict;
}

static char *
lvstorCallForPath(const char *path, const char *iface, const char *method, GVariant *args,
                  lvstorNotFoundKind notFound)
{
    g_autoptr(GVariant) reply = NULL;
    char *result = NULL;

    if (!(reply = lvstorCall(path, iface, method, args, "(o)", NULL, notFound)))
        return NULL;
    g_variant_get(reply, "(o)", &result);
    return result;
}

char *
lvstorPoolPath(const char *pool)
{
    return lvstorCallForPath(LVSTOR_MANAGER_PATH, LVSTOR_MANAGER_IFACE, "GetPool",
                             g_variant_new("(s)", pool), LVSTOR_NOT_FOUND_IS_POOL);
}

char *
lvstorVolumePath(const char *pool, const char *volume)
{
    g_autofree char *poolPath = NULL;

    if (!(poolPath = lvstorPoolPath(pool)))
        return NULL;
    return lvstorCallForPath(poolPath, LVSTOR_POOL_IFACE, "GetVolume",
                             g_variant_new("(s)", volume), LVSTOR_NOT_FOUND_IS_VOLUME);
}

char *
lvstorRuntimeDirectory(void)
{
    g_autoptr(GVariant) reply = NULL;
    g_autoptr(GVariant) value = NULL;

    if (!(reply = lvstorCall(LVSTOR_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                             g_variant_new("(ss)", LVSTOR_MANAGER_IFACE, "RuntimeDirectory"),
                             "(v)", NULL, LVSTOR_NOT_FOUND_IS_POOL)))
        return NULL;
    g_variant_get(reply, "(v)", &value);
    if (!g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) {
        virReportError(VIR_ERR_INTERNAL_ERROR, "%s", "lvstord's RuntimeDirectory is not a string");
        return NULL;
    }
    return g_variant_dup_string(value, NULL);
}

char *
lvstorSocketPath(const char *runtimeDirectory, const char *pool, const char *volume)
{
    g_autofree char *dir = g_strdup(runtimeDirectory);
    size_t len = strlen(dir);

    while (len > 1 && dir[len - 1] == '/')
        dir[--len] = '\0';
    return g_strdup_printf("%s/%s/%s.sock", dir, pool, volume);
}

int
lvstorWaitJob(const char *what, const char *jobPath, char **resultPath)
{
    gulong pauseUs = 20 * 1000;

    for (;;) {
        g_autoptr(GVariant) props = NULL;
        const char *state;

        /* Each poll is also the liveness check: lvstord gone means ServiceUnknown here. */
        if (!(props = lvstorGetAll(jobPath, LVSTOR_JOB_IFACE, LVSTOR_NOT_FOUND_IS_VOLUME)))
            return -1;
        state = lvstorDictString(props, "State");
        if (!g_str_equal(state, "running")) {
            if (g_str_equal(state, "completed")) {
                if (resultPath)
                    *resultPath = g_strdup(lvstorDictString(props, "Result"));
                return 0;
            }
            VIR_WARN("%s: job %s ended %s: %s", what, jobPath, state,
                     lvstorDictString(props, "ErrorMessage"));
            lvstorReportJobError(what, lvstorDictString(props, "ErrorName"),
                                 lvstorDictString(props, "ErrorMessage"));
            return -1;
        }
        g_usleep(pauseUs);
        pauseUs = MIN(pauseUs * 2, 500 * 1000);
    }
}

const char *
lvstorDictString(GVariant *dict, const char *key)
{
    const char *value = NULL;

    if (dict && (g_variant_lookup(dict, key, "&s", &value) || g_variant_lookup(dict, key, "&o", &value)))
        return value;
    return "";
}

guint64
lvstorDictU64(GVariant *dict, const char *key)
{
    guint64 value = 0;

    if (dict)
        g_variant_lookup(dict, key, "t", &value);
    return value;
}

gboolean
lvstorDictBool(GVariant *dict, const char *key)
{
    gboolean value = FALSE;

    if (dict)
        g_variant_lookup(dict, key, "b", &value);
    return value;
}
