using System.Diagnostics.CodeAnalysis;

namespace LibvirtStorage.Vhost;

/// <summary>Throw sites kept out of hot methods. Partial: each folder adds its own file (ThrowHelper.Protocol.cs, ...).</summary>
internal static partial class ThrowHelper
{
    [DoesNotReturn]
    public static void Protocol(VhostUserProtocolException ex) => throw ex;

    [DoesNotReturn]
    public static void ArgumentOutOfRange(string name, string message) => throw new ArgumentOutOfRangeException(name, message);
}
