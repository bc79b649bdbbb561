using LibvirtStorage.TestSupport;
using Xunit;

namespace LibvirtStorage.DBus.Tests;

/// <summary>A test against a real dbus-daemon; skipped, naming the package, where there is none (xunit 2 has no dynamic skip).</summary>
public sealed class BusFactAttribute : FactAttribute
{
    public BusFactAttribute()
    {
        if (PrivateBus.MissingReason is { } missing)
        {
            Skip = missing;
        }
    }
}

/// <inheritdoc cref="BusFactAttribute"/>
public sealed class BusTheoryAttribute : TheoryAttribute
{
    public BusTheoryAttribute()
    {
        if (PrivateBus.MissingReason is { } missing)
        {
            Skip = missing;
        }
    }
}
