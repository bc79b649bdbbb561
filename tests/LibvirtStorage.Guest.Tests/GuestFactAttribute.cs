using Xunit;

namespace LibvirtStorage.Guest.Tests;

/// <summary>
/// A test that boots the real test guest under QEMU (TCG). Skipped, with the reason, on a machine without the
/// tools the guest scripts need; <c>.ci/run</c> installs them, so CI always runs these tests.
/// </summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class GuestFactAttribute : FactAttribute
{
    public GuestFactAttribute()
    {
        string? missing = GuestEnvironment.MissingTool();
        if (missing is not null)
            Skip = $"{missing} is not installed on this machine (.ci/run installs it: see tests/guest/README.md)";
    }
}
