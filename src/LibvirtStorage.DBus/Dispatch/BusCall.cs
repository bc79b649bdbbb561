using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>A method body: reads its arguments from <see cref="BusCall.Request"/>, calls the service, replies.</summary>
internal delegate Task MethodBody(BusCall call);

/// <summary>One method of one interface: its exact input signature, whether it needs an admin caller, and its body.</summary>
internal sealed record BusMethod(string Interface, string Name, string Signature, bool Admin, MethodBody Body);

/// <summary>A call being answered: the request, the object it targets, and reply helpers.</summary>
internal sealed class BusCall(MethodContext context, BusObject target, StorageBusServer server)
{
    public MethodContext Context { get; } = context;

    public Message Request => Context.Request;

    public BusObject Target { get; } = target;

    public StorageBusServer Server { get; } = server;

    public void ReplyEmpty()
    {
        using MessageWriter writer = Context.CreateReplyWriter(null);
        Context.Reply(writer.CreateMessage());
    }

    public void ReplyObjectPath(string path)
    {
        using MessageWriter writer = Context.CreateReplyWriter("o");
        writer.WriteObjectPath(path);
        Context.Reply(writer.CreateMessage());
    }

    public void ReplyObjectPaths(IEnumerable<string> paths)
    {
        using MessageWriter writer = Context.CreateReplyWriter("ao");
        writer.WriteArray(paths.Select(p => new ObjectPath(p)).ToArray());
        Context.Reply(writer.CreateMessage());
    }

    public void Reply(string signature, StorageBusServer.BodyWriter body)
    {
        MessageWriter writer = Context.CreateReplyWriter(signature);
        try
        {
            body(ref writer);
            Context.Reply(writer.CreateMessage());
        }
        finally
        {
            writer.Dispose();
        }
    }

    /// <summary>A <c>t</c> argument that must fit the service's signed 64-bit sizes.</summary>
    public static long ToSize(ulong value, string what) =>
        value <= long.MaxValue ? (long)value : throw BusError.Invalid($"{what} {value} is too large (at most {long.MaxValue})");
}
