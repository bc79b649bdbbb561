using System.Text;

namespace LibvirtStorage.DBus;

/// <summary>Interface names and their introspection XML, exactly as docs/dbus-api.md lists them.</summary>
internal static class Interfaces
{
    public const string Manager = "org.lvstor.Storage1.Manager";
    public const string Pool = "org.lvstor.Storage1.Pool";
    public const string Volume = "org.lvstor.Storage1.Volume";
    public const string Job = "org.lvstor.Storage1.Job";
    public const string Properties = "org.freedesktop.DBus.Properties";
    public const string Introspectable = "org.freedesktop.DBus.Introspectable";
    public const string Peer = "org.freedesktop.DBus.Peer";
    public const string ObjectManager = "org.freedesktop.DBus.ObjectManager";

    private const string ReadOnly = "read";

    public static readonly ReadOnlyMemory<byte> ManagerXml = Xml(Manager,
        [("Version", "s"), ("StateDirectory", "s"), ("RuntimeDirectory", "s")],
        """
        <method name="DefinePool"><arg name="name" type="s" direction="in"/><arg name="path" type="s" direction="in"/><arg name="pool" type="o" direction="out"/></method>
        <method name="ListPools"><arg name="pools" type="ao" direction="out"/></method>
        <method name="GetPool"><arg name="name" type="s" direction="in"/><arg name="pool" type="o" direction="out"/></method>
        <method name="GetVolumeByKey"><arg name="key" type="s" direction="in"/><arg name="volume" type="o" direction="out"/></method>
        <method name="GetVolumeByPath"><arg name="path" type="s" direction="in"/><arg name="volume" type="o" direction="out"/></method>
        <method name="ListJobs"><arg name="jobs" type="ao" direction="out"/></method>
        <method name="GetStatus"><arg name="status" type="a{sv}" direction="out"/></method>
        <method name="ListUsers"><arg name="users" type="a(ssss)" direction="out"/></method>
        """);

    public static readonly ReadOnlyMemory<byte> PoolXml = Xml(Pool,
        [("Name", "s"), ("Uuid", "s"), ("Path", "s"), ("Active", "b"), ("Autostart", "b"), ("Capacity", "t"), ("Allocation", "t"), ("Available", "t"), ("VolumeCount", "u")],
        """
        <method name="Start"/>
        <method name="Stop"/>
        <method name="Undefine"/>
        <method name="SetAutostart"><arg name="autostart" type="b" direction="in"/></method>
        <method name="Refresh"><arg name="adopted" type="as" direction="out"/><arg name="problems" type="a(ss)" direction="out"/></method>
        <method name="ListVolumes"><arg name="volumes" type="ao" direction="out"/></method>
        <method name="GetVolume"><arg name="name" type="s" direction="in"/><arg name="volume" type="o" direction="out"/></method>
        <method name="CreateVolume"><arg name="name" type="s" direction="in"/><arg name="format" type="s" direction="in"/><arg name="capacity" type="t" direction="in"/><arg name="backing_volume" type="s" direction="in"/><arg name="options" type="a{sv}" direction="in"/><arg name="volume" type="o" direction="out"/></method>
        """);

    public static readonly ReadOnlyMemory<byte> VolumeXml = Xml(Volume,
        [("Name", "s"), ("Key", "s"), ("Pool", "o"), ("PoolName", "s"), ("Format", "s"), ("Capacity", "t"), ("Allocation", "t"), ("ReadOnly", "b"),
         ("Path", "s"), ("File", "s"), ("BackingChain", "a(ssss)"), ("Snapshots", "a(sxss)"), ("Users", "a(ss)"), ("ExportState", "s"), ("Problem", "s")],
        """
        <method name="Delete"/>
        <method name="Resize"><arg name="capacity" type="t" direction="in"/><arg name="allow_shrink" type="b" direction="in"/></method>
        <method name="CreateSnapshot"><arg name="name" type="s" direction="in"/></method>
        <method name="RevertToSnapshot"><arg name="name" type="s" direction="in"/><arg name="discard_newer" type="b" direction="in"/></method>
        <method name="Clone"><arg name="target" type="s" direction="in"/><arg name="mode" type="s" direction="in"/><arg name="format" type="s" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="CloneFrom"><arg name="target" type="s" direction="in"/><arg name="mode" type="s" direction="in"/><arg name="format" type="s" direction="in"/><arg name="options" type="a{sv}" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="Upload"><arg name="fd" type="h" direction="in"/><arg name="offset" type="t" direction="in"/><arg name="length" type="t" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="Download"><arg name="fd" type="h" direction="in"/><arg name="offset" type="t" direction="in"/><arg name="length" type="t" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="UploadStaged"><arg name="file" type="h" direction="in"/><arg name="ready" type="h" direction="in"/><arg name="offset" type="t" direction="in"/><arg name="length" type="t" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="Wipe"><arg name="job" type="o" direction="out"/></method>
        <method name="Stream"><arg name="options" type="a{sv}" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="Commit"><arg name="options" type="a{sv}" direction="in"/><arg name="job" type="o" direction="out"/></method>
        <method name="MoveBase"><arg name="target_pool" type="s" direction="in"/><arg name="options" type="a{sv}" direction="in"/><arg name="job" type="o" direction="out"/></method>
        """);

    public static readonly ReadOnlyMemory<byte> JobXml = Xml(Job,
        [("Type", "s"), ("Pool", "s"), ("Volume", "s"), ("Target", "s"), ("BytesDone", "t"), ("BytesTotal", "t"), ("State", "s"),
         ("ErrorName", "s"), ("ErrorMessage", "s"), ("Result", "o"), ("StartedAt", "x"), ("Speed", "t"), ("Paused", "b"), ("Priority", "s")],
        """
        <method name="Cancel"/>
        <method name="SetSpeed"><arg name="bytes_per_second" type="t" direction="in"/></method>
        <method name="Pause"/>
        <method name="Resume"/>
        <signal name="Completed"><arg name="state" type="s"/><arg name="error_name" type="s"/><arg name="error_message" type="s"/></signal>
        """);

    public static readonly ReadOnlyMemory<byte> PropertiesXml = Encoding.UTF8.GetBytes("""
        <interface name="org.freedesktop.DBus.Properties">
        <method name="Get"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="out"/></method>
        <method name="GetAll"><arg name="interface_name" type="s" direction="in"/><arg name="props" type="a{sv}" direction="out"/></method>
        <method name="Set"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method>
        <signal name="PropertiesChanged"><arg name="interface_name" type="s"/><arg name="changed_properties" type="a{sv}"/><arg name="invalidated_properties" type="as"/></signal>
        </interface>
        <interface name="org.freedesktop.DBus.Peer">
        <method name="Ping"/>
        <method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method>
        </interface>

        """);

    public static readonly ReadOnlyMemory<byte> ObjectManagerXml = Encoding.UTF8.GetBytes("""
        <interface name="org.freedesktop.DBus.ObjectManager">
        <method name="GetManagedObjects"><arg name="objects" type="a{oa{sa{sv}}}" direction="out"/></method>
        <signal name="InterfacesAdded"><arg name="object" type="o"/><arg name="interfaces" type="a{sa{sv}}"/></signal>
        <signal name="InterfacesRemoved"><arg name="object" type="o"/><arg name="interfaces" type="as"/></signal>
        </interface>

        """);

    public static ReadOnlyMemory<byte> XmlOf(string interfaceName) => interfaceName switch
    {
        Manager => ManagerXml,
        Pool => PoolXml,
        Volume => VolumeXml,
        Job => JobXml,
        _ => throw new ArgumentOutOfRangeException(nameof(interfaceName)),
    };

    private static ReadOnlyMemory<byte> Xml(string name, (string Name, string Type)[] properties, string methods)
    {
        var xml = new StringBuilder();
        xml.Append("<interface name=\"").Append(name).Append("\">\n");
        foreach ((string property, string type) in properties)
        {
            // Every property signals its changes with its value: the default EmitsChangedSignal, so no annotation.
            xml.Append("<property name=\"").Append(property).Append("\" type=\"").Append(type).Append("\" access=\"").Append(ReadOnly).Append("\"/>\n");
        }

        xml.Append(methods).Append("\n</interface>\n");
        return Encoding.UTF8.GetBytes(xml.ToString());
    }
}
