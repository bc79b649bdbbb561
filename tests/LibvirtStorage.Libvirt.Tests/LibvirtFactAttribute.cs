using Xunit;

namespace LibvirtStorage.Libvirt.Tests;

/// <summary>
/// A test that drives a real libvirtd with our storage module. Skipped, naming what is missing (libvirtd, virsh,
/// strace, dbus-daemon, lvstord's build, the module not built by <c>make shim</c>, root).
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class LibvirtFactAttribute : FactAttribute
{
    public LibvirtFactAttribute()
    {
        if (LibvirtEnvironment.MissingReason is { } missing)
            Skip = missing;
    }
}

/// <summary>A libvirt test that also boots the test guest (QEMU, TCG): skipped when QEMU or busybox is missing too.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class LibvirtGuestFactAttribute : FactAttribute
{
    public LibvirtGuestFactAttribute()
    {
        if (LibvirtEnvironment.MissingGuestReason is { } missing)
            Skip = missing;
    }
}
