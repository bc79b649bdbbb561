using Microsoft.Extensions.Logging;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

public sealed partial class StorageBusServer
{
    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(100);
    private readonly Dictionary<long, DateTimeOffset> _lastProgressSignal = [];
    private readonly HashSet<long> _completedSignalled = [];

    /// <summary>
    /// A job's BytesDone that changed within <see cref="ProgressInterval"/> of its last signal keeps its old value
    /// in the returned tree, and a later resync is scheduled to catch up. Called under the sync lock.
    /// </summary>
    private ObjectTree HoldThrottledProgress(ObjectTree old, ObjectTree next)
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        foreach (BusObject job in next.Objects.Where(o => o.Kind == BusObjectKind.Job).ToList())
        {
            if (old.Find(job.Path) is not { } before || before.Properties["BytesDone"].Equals(job.Properties["BytesDone"]))
            {
                continue;
            }

            bool running = job.Properties["State"].Equals(BusValue.String("running"));
            if (running && _lastProgressSignal.TryGetValue(job.JobId, out DateTimeOffset last) && now - last < ProgressInterval)
            {
                var held = new Dictionary<string, BusValue>(job.Properties) { ["BytesDone"] = before.Properties["BytesDone"] };
                next = next.With(job with { Properties = held });
                RequestResync(ProgressInterval - (now - last));
            }
            else
            {
                _lastProgressSignal[job.JobId] = now;
            }
        }

        return next;
    }

    /// <summary>
    /// Signals the difference between two trees: InterfacesAdded (parents first), PropertiesChanged with the
    /// changed properties only, InterfacesRemoved (children first), then each job's Completed once. Called under
    /// the sync lock, after <paramref name="next"/> is published, so a client that reacts to a signal by reading
    /// properties sees at least what the signal announced.
    /// </summary>
    private void SendChanges(ObjectTree old, ObjectTree next)
    {
        foreach (BusObject added in next.Objects)
        {
            BusObject? before = old.Find(added.Path);
            if (before is null)
            {
                if (added.Kind != BusObjectKind.Manager)
                {
                    SendInterfacesAdded(added);
                }
            }
            else
            {
                var changed = added.Properties.Where(p => !before.Properties.TryGetValue(p.Key, out BusValue? v) || !v.Equals(p.Value)).ToList();
                if (changed.Count > 0)
                {
                    SendPropertiesChanged(added.Path, added.Interface, changed);
                }
            }
        }

        foreach (BusObject removed in old.Objects.Reverse())
        {
            if (next.Find(removed.Path) is null && removed.Kind != BusObjectKind.Manager)
            {
                Send(ObjectPaths.Root, Interfaces.ObjectManager, "InterfacesRemoved", "oas", (ref MessageWriter w) =>
                {
                    w.WriteObjectPath(removed.Path);
                    w.WriteArray(new[] { removed.Interface });
                });
                if (removed.Kind == BusObjectKind.Job)
                {
                    _completedSignalled.Remove(removed.JobId);
                    _lastProgressSignal.Remove(removed.JobId);
                }
            }
        }

        foreach (BusObject job in next.Objects.Where(o => o.Kind == BusObjectKind.Job))
        {
            if (!job.Properties["State"].Equals(BusValue.String("running")) && _completedSignalled.Add(job.JobId))
            {
                Send(job.Path, Interfaces.Job, "Completed", "sss", (ref MessageWriter w) =>
                {
                    job.Properties["State"].Write(ref w);
                    job.Properties["ErrorName"].Write(ref w);
                    job.Properties["ErrorMessage"].Write(ref w);
                });
            }
        }
    }

    private void SendInterfacesAdded(BusObject added) =>
        Send(ObjectPaths.Root, Interfaces.ObjectManager, "InterfacesAdded", "oa{sa{sv}}", (ref MessageWriter w) =>
        {
            w.WriteObjectPath(added.Path);
            WriteInterfaces(ref w, added);
        });

    private void SendPropertiesChanged(string path, string interfaceName, IEnumerable<KeyValuePair<string, BusValue>> changed) =>
        Send(path, Interfaces.Properties, "PropertiesChanged", "sa{sv}as", (ref MessageWriter w) =>
        {
            w.WriteString(interfaceName);
            WriteProperties(ref w, changed);
            w.WriteArray(Array.Empty<string>());
        });

    /// <summary>Writes <c>a{sa{sv}}</c>: the object's lvstor interface with all its properties.</summary>
    internal static void WriteInterfaces(ref MessageWriter writer, BusObject target)
    {
        ArrayStart interfaces = writer.WriteDictionaryStart();
        writer.WriteDictionaryEntryStart();
        writer.WriteString(target.Interface);
        WriteProperties(ref writer, target.Properties);
        writer.WriteDictionaryEnd(interfaces);
    }

    /// <summary>Writes <c>a{sv}</c>.</summary>
    internal static void WriteProperties(ref MessageWriter writer, IEnumerable<KeyValuePair<string, BusValue>> properties)
    {
        ArrayStart dictionary = writer.WriteDictionaryStart();
        foreach ((string name, BusValue value) in properties)
        {
            writer.WriteDictionaryEntryStart();
            writer.WriteString(name);
            value.WriteVariant(ref writer);
        }

        writer.WriteDictionaryEnd(dictionary);
    }

    internal delegate void BodyWriter(ref MessageWriter writer);

    private void Send(string path, string interfaceName, string member, string signature, BodyWriter body)
    {
        MessageWriter writer = _connection.GetMessageWriter();
        try
        {
            writer.WriteSignalHeader(null, path, interfaceName, member, signature);
            body(ref writer);
            if (!_connection.TrySendMessage(writer.CreateMessage()))
            {
                _logger.LogDebug("signal {Member} on {Path} not sent: the connection is closed", member, path);
            }
        }
        finally
        {
            writer.Dispose();
        }
    }
}
