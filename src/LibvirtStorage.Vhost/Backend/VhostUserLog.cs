using Microsoft.Extensions.Logging;

namespace LibvirtStorage.Vhost.Backend;

/// <summary>The back-end's log events (source-generated, so nothing is formatted unless the level is enabled).</summary>
internal static partial class VhostUserLog
{
    /// <summary>A front-end request failed; the connection was nacked (REPLY_ACK) or broken.</summary>
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "vhost-user {Request}: {Reason}")]
    public static partial void RequestFailed(ILogger logger, string request, string reason);

    /// <summary>A queue stopped serving the driver (a ring error, or a device failure).</summary>
    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "vhost-user queue {Queue} broken: {Reason}")]
    public static partial void QueueBroken(ILogger logger, int queue, string reason);

    /// <summary>The connection ended (front-end gone, rules broken, or shutdown).</summary>
    [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "vhost-user connection ended: {Reason}")]
    public static partial void ConnectionEnded(ILogger logger, string reason);

    /// <summary>A config-change notification on the back-end channel failed; the main connection goes on.</summary>
    [LoggerMessage(EventId = 10, Level = LogLevel.Warning, Message = "vhost-user back-end channel: config change {Outcome}: {Reason}")]
    public static partial void BackendChannelFailed(ILogger logger, string outcome, string reason);

    /// <summary>A queue started on an inflight area (SET_INFLIGHT_FD) that a previous back-end left requests in.</summary>
    [LoggerMessage(EventId = 4, Level = LogLevel.Information, Message = "vhost-user queue {Queue}: resubmitting {Count} request(s) left in flight, continuing at avail index {NextAvail}")]
    public static partial void Resubmitting(ILogger logger, int queue, int count, ushort nextAvail);

    /// <summary>SET_FEATURES: what the front-end acknowledged (one line per device start; shows EVENT_IDX in soak logs).</summary>
    [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "vhost-user front-end acknowledged features 0x{Features:x} (event_idx {EventIdx}, indirect {Indirect})")]
    public static partial void FeaturesAcknowledged(ILogger logger, ulong features, bool eventIdx, bool indirect);
}
