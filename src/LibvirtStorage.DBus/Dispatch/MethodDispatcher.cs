using System.Text;
using LibvirtStorage.Service;
using Microsoft.Extensions.Logging;
using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>
/// The one method handler for <see cref="StorageBusServer.RootPath"/> and every path below it. It answers the
/// standard interfaces itself and routes lvstor methods by (interface, member) to the tables of
/// <see cref="ManagerMethods"/>, <see cref="PoolMethods"/>, <see cref="VolumeMethods"/> and <see cref="JobMethods"/>.
/// </summary>
/// <remarks>
/// Calls are handled on the thread pool (<see cref="MethodContext.DisposesAsynchronously"/>), so the
/// connection keeps reading while a service call blocks. Calls from one sender run one after another, in the
/// order they arrived (a client that pipelines CreateVolume and GetVolume gets what a single-threaded server
/// would give); calls from different senders run in parallel. Errors are mapped in one place, <see cref="ReplyError"/>.
/// </remarks>
internal sealed class MethodDispatcher(StorageBusServer server, ILogger logger) : IPathMethodHandler
{
    private readonly Lock _queueLock = new();
    private readonly Dictionary<string, Task> _senderTails = new(StringComparer.Ordinal);

    private static readonly Dictionary<(string Interface, string Member), BusMethod> Methods =
        ManagerMethods.All.Concat(PoolMethods.All).Concat(VolumeMethods.All).Concat(JobMethods.All)
            .ToDictionary(m => (m.Interface, m.Name));

    public string Path => StorageBusServer.RootPath;

    public bool HandlesChildPaths => true;

    public ValueTask HandleMethodAsync(MethodContext context)
    {
        Enqueue(context);
        return default;
    }

    /// <summary>Queues the call behind the same sender's earlier calls; called on the receive loop, so arrival order is kept.</summary>
    internal void Enqueue(MethodContext context)
    {
        context.DisposesAsynchronously = true;
        string sender = context.Request.SenderAsString ?? "";
        lock (_queueLock)
        {
            Task previous = _senderTails.GetValueOrDefault(sender) ?? Task.CompletedTask;
            Task tail = previous.ContinueWith(_ => HandleAsync(context), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();
            _senderTails[sender] = tail;
            _ = tail.ContinueWith(done => Forget(sender, done), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private void Forget(string sender, Task done)
    {
        lock (_queueLock)
        {
            if (_senderTails.TryGetValue(sender, out Task? tail) && tail == done)
            {
                _senderTails.Remove(sender);
            }
        }
    }

    private async Task HandleAsync(MethodContext context)
    {
        try
        {
            await RouteAsync(context).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            ReplyError(context, ex);
        }
        finally
        {
            context.Dispose();
        }
    }

    private async Task RouteAsync(MethodContext context)
    {
        Message request = context.Request;
        string path = request.PathAsString ?? "/";
        string? iface = request.InterfaceAsString;
        string member = request.MemberAsString ?? "";
        string signature = request.SignatureAsString ?? "";

        if (iface is null or Interfaces.Introspectable && member == "Introspect")
        {
            Expect(signature, "", iface, member);
            ReplyIntrospection(context, path, server.Tree);
            return;
        }

        if (iface is null or Interfaces.Peer && member is "Ping" or "GetMachineId")
        {
            StandardInterfaces.ReplyPeer(context, member, signature);
            return;
        }

        BusObject target = FindObject(path) ?? (IsFolder(path)
            ? new BusObject(path, BusObjectKind.Manager, "", new Dictionary<string, BusValue>())
            : throw BusError.NotFound($"no pool, volume or job at {path}; it may have been removed (list the manager's pools and jobs again)"));

        if (iface is null or Interfaces.Properties && member is "Get" or "GetAll" or "Set")
        {
            StandardInterfaces.ReplyProperties(context, target.Interface.Length == 0 ? target : server.FreshTree().Find(path) ?? target, member, signature);
            return;
        }

        if (iface is null or Interfaces.ObjectManager && member == "GetManagedObjects" && path == StorageBusServer.RootPath)
        {
            Expect(signature, "", iface, member);
            StandardInterfaces.ReplyManagedObjects(context, server.FreshTree());
            return;
        }

        string objectInterface = target.Interface;
        if (objectInterface.Length == 0 || (iface is not null && iface != objectInterface))
        {
            throw BusError.UnknownMethod($"no method {iface ?? "(any interface)"}.{member} on {path}");
        }

        if (!Methods.TryGetValue((objectInterface, member), out BusMethod? method))
        {
            throw BusError.UnknownMethod($"no method {objectInterface}.{member} on {path}; see Introspect for the methods");
        }

        Expect(signature, method.Signature, objectInterface, member);
        if (method.Admin)
        {
            await server.Authorizer.DemandAdminAsync(request.SenderAsString, $"{objectInterface}.{member}").ConfigureAwait(false);
        }

        await method.Body(new BusCall(context, target, server)).ConfigureAwait(false);
    }

    /// <summary>The object at <paramref name="path"/>, resyncing once when the current tree does not have it.</summary>
    private BusObject? FindObject(string path) => server.Tree.Find(path) ?? server.Resync().Find(path);

    private static bool IsFolder(string path) => path is ObjectPaths.PoolFolder or ObjectPaths.JobFolder or "/" or "/org" or "/org/lvstor";

    internal static void Expect(string actual, string expected, string? iface, string member)
    {
        if (actual != expected)
        {
            throw BusError.InvalidArgs($"{iface ?? "(interface not given)"}.{member} takes arguments of signature '{expected}', not '{actual}'");
        }
    }

    internal static void ReplyIntrospection(MethodContext context, string path, ObjectTree tree)
    {
        var xml = new StringBuilder();
        xml.Append("<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n");
        xml.Append("<interface name=\"org.freedesktop.DBus.Introspectable\"><method name=\"Introspect\"><arg name=\"xml_data\" type=\"s\" direction=\"out\"/></method></interface>\n");
        xml.Append(Encoding.UTF8.GetString(Interfaces.PropertiesXml.Span));
        BusObject? target = tree.Find(path);
        if (path == StorageBusServer.RootPath)
        {
            xml.Append(Encoding.UTF8.GetString(Interfaces.ObjectManagerXml.Span));
        }

        if (target is not null && target.Interface.Length > 0)
        {
            xml.Append(Encoding.UTF8.GetString(Interfaces.XmlOf(target.Interface).Span));
        }

        IEnumerable<string> children = path switch
        {
            "/" => ["org"],
            "/org" => ["lvstor"],
            "/org/lvstor" => ["Storage1"],
            StorageBusServer.RootPath => ["job", "pool"],
            _ => tree.ChildNames(path),
        };
        foreach (string child in children.Order(StringComparer.Ordinal))
        {
            xml.Append("<node name=\"").Append(child).Append("\"/>\n");
        }

        xml.Append("</node>\n");
        using MessageWriter writer = context.CreateReplyWriter("s");
        writer.WriteString(xml.ToString());
        context.Reply(writer.CreateMessage());
    }

    /// <summary>The one place errors become replies: service kinds, adapter checks, and anything unexpected (logged, Io).</summary>
    private void ReplyError(MethodContext context, Exception ex)
    {
        if (context.ReplySent || context.NoReplyExpected)
        {
            if (ex is not (BusError or StorageServiceException))
            {
                logger.LogError(ex, "{Member} on {Path} failed after replying", context.Request.MemberAsString, context.Request.PathAsString);
            }

            return;
        }

        switch (ex)
        {
            case BusError bus:
                context.ReplyError(bus.Name, bus.Message);
                break;
            case StorageServiceException service:
                context.ReplyError(service.DBusErrorName, service.Message);
                break;
            case DBusReadException protocol:
                context.ReplyError("org.freedesktop.DBus.Error.InvalidArgs", $"malformed arguments: {protocol.Message}");
                break;
            default:
                logger.LogError(ex, "{Interface}.{Member} on {Path} failed unexpectedly", context.Request.InterfaceAsString, context.Request.MemberAsString, context.Request.PathAsString);
                context.ReplyError(BusError.Prefix + "Io", $"{context.Request.MemberAsString} failed: {ex.Message}");
                break;
        }
    }
}

/// <summary>Answers Introspect, Peer and Properties on "/", "/org" and "/org/lvstor", so tools can walk to the root.</summary>
internal sealed class IntermediateNode(string path, MethodDispatcher dispatcher) : IPathMethodHandler
{
    public string Path { get; } = path;

    public bool HandlesChildPaths => false;

    public static IEnumerable<IPathMethodHandler> All(MethodDispatcher dispatcher) =>
        new[] { "/", "/org", "/org/lvstor" }.Select(p => new IntermediateNode(p, dispatcher));

    public ValueTask HandleMethodAsync(MethodContext context)
    {
        dispatcher.Enqueue(context);
        return default;
    }
}
