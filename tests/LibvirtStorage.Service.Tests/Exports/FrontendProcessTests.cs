using LibvirtStorage.Service;
using Xunit;

namespace LibvirtStorage.Service.Tests.Exports;

/// <summary>The domain name of a connected QEMU comes from its -name option, as libvirt and users write it.</summary>
public sealed class FrontendProcessTests
{
    [Theory]
    [InlineData("guest=web1,debug-threads=on", "web1")]            // libvirt
    [InlineData("web1", "web1")]                                      // qemu -name NAME
    [InlineData("web1,process=qemu-web1", "web1")]
    [InlineData("guest=a,,b,debug-threads=on", "a,b")]               // ",," is a comma inside the value
    [InlineData("debug-threads=on,guest=late", "late")]
    [InlineData("process=x", null)]
    [InlineData("guest=", null)]
    public void Domain_name_from_the_name_option(string value, string? expected)
    {
        Assert.Equal(expected, FrontendProcess.DomainName(["qemu-system-x86_64", "-machine", "pc", "-name", value, "-m", "512"]));
    }

    [Fact]
    public void No_name_option_no_domain()
    {
        Assert.Null(FrontendProcess.DomainName(["qemu-system-x86_64", "-m", "512"]));
        Assert.Null(FrontendProcess.DomainName(["qemu-system-x86_64", "-name"]));
    }

    [Fact]
    public void A_process_without_a_name_option_is_described_by_pid_and_comm()
    {
        string described = FrontendProcess.Describe(Environment.ProcessId);
        Assert.StartsWith($"pid {Environment.ProcessId} (", described, StringComparison.Ordinal);
    }
}
