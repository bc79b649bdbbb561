namespace LibvirtStorage.DBus;

/// <summary>An error reply decided by the adapter itself (argument checks, unknown objects, authorisation).</summary>
internal sealed class BusError(string name, string message) : Exception(message)
{
    public const string Prefix = "org.lvstor.Storage1.Error.";

    public string Name { get; } = name;

    public static BusError Invalid(string message) => new(Prefix + "Invalid", message);

    public static BusError NotFound(string message) => new(Prefix + "NotFound", message);

    public static BusError AccessDenied(string message) => new(Prefix + "AccessDenied", message);

    public static BusError InvalidArgs(string message) => new("org.freedesktop.DBus.Error.InvalidArgs", message);

    public static BusError UnknownMethod(string message) => new("org.freedesktop.DBus.Error.UnknownMethod", message);

    public static BusError UnknownInterface(string message) => new("org.freedesktop.DBus.Error.UnknownInterface", message);

    public static BusError UnknownProperty(string message) => new("org.freedesktop.DBus.Error.UnknownProperty", message);

    public static BusError PropertyReadOnly(string message) => new("org.freedesktop.DBus.Error.PropertyReadOnly", message);
}
