using Tmds.DBus.Protocol;

namespace LibvirtStorage.DBus;

/// <summary>org.freedesktop.DBus.Peer, .Properties and .ObjectManager over the object tree.</summary>
internal static class StandardInterfaces
{
    private static readonly Lazy<string> MachineId = new(() =>
    {
        try
        {
            return File.ReadAllText("/etc/machine-id").Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    });

    public static void ReplyPeer(MethodContext context, string member, string signature)
    {
        MethodDispatcher.Expect(signature, "", Interfaces.Peer, member);
        if (member == "Ping")
        {
            using MessageWriter empty = context.CreateReplyWriter(null);
            context.Reply(empty.CreateMessage());
            return;
        }

        if (MachineId.Value.Length == 0)
        {
            throw new BusError("org.freedesktop.DBus.Error.FileNotFound", "/etc/machine-id cannot be read");
        }

        using MessageWriter writer = context.CreateReplyWriter("s");
        writer.WriteString(MachineId.Value);
        context.Reply(writer.CreateMessage());
    }

    public static void ReplyProperties(MethodContext context, BusObject target, string member, string signature)
    {
        Reader reader = context.Request.GetBodyReader();
        switch (member)
        {
            case "Get":
            {
                MethodDispatcher.Expect(signature, "ss", Interfaces.Properties, member);
                string iface = reader.ReadString();
                string name = reader.ReadString();
                CheckInterface(target, iface);
                if (!target.Properties.TryGetValue(name, out BusValue? value))
                {
                    throw BusError.UnknownProperty($"{target.Interface} has no property {name}");
                }

                MessageWriter writer = context.CreateReplyWriter("v");
                try
                {
                    value.WriteVariant(ref writer);
                    context.Reply(writer.CreateMessage());
                }
                finally
                {
                    writer.Dispose();
                }

                break;
            }

            case "GetAll":
            {
                MethodDispatcher.Expect(signature, "s", Interfaces.Properties, member);
                string iface = reader.ReadString();
                IReadOnlyDictionary<string, BusValue> properties = iface == target.Interface || iface.Length == 0 ? target.Properties : new Dictionary<string, BusValue>();
                if (properties.Count == 0 && iface.Length > 0 && !IsStandard(iface))
                {
                    CheckInterface(target, iface);
                }

                MessageWriter writer = context.CreateReplyWriter("a{sv}");
                try
                {
                    StorageBusServer.WriteProperties(ref writer, properties);
                    context.Reply(writer.CreateMessage());
                }
                finally
                {
                    writer.Dispose();
                }

                break;
            }

            default:
            {
                MethodDispatcher.Expect(signature, "ssv", Interfaces.Properties, member);
                string iface = reader.ReadString();
                string name = reader.ReadString();
                CheckInterface(target, iface);
                if (!target.Properties.ContainsKey(name))
                {
                    throw BusError.UnknownProperty($"{target.Interface} has no property {name}");
                }

                throw BusError.PropertyReadOnly($"{target.Interface}.{name} is read-only; use the interface's methods to change it");
            }
        }
    }

    public static void ReplyManagedObjects(MethodContext context, ObjectTree tree)
    {
        MessageWriter writer = context.CreateReplyWriter("a{oa{sa{sv}}}");
        try
        {
            ArrayStart objects = writer.WriteDictionaryStart();
            foreach (BusObject item in tree.Objects)
            {
                if (item.Kind == BusObjectKind.Manager)
                {
                    continue;
                }

                writer.WriteDictionaryEntryStart();
                writer.WriteObjectPath(item.Path);
                StorageBusServer.WriteInterfaces(ref writer, item);
            }

            writer.WriteDictionaryEnd(objects);
            context.Reply(writer.CreateMessage());
        }
        finally
        {
            writer.Dispose();
        }
    }

    private static bool IsStandard(string iface) =>
        iface is Interfaces.Properties or Interfaces.Introspectable or Interfaces.Peer or Interfaces.ObjectManager;

    private static void CheckInterface(BusObject target, string iface)
    {
        if (iface.Length > 0 && iface != target.Interface)
        {
            throw BusError.UnknownInterface($"{target.Path} has no properties of interface {iface}" +
                (target.Interface.Length > 0 ? $"; its interface is {target.Interface}" : ""));
        }
    }
}
