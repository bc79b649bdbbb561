using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// Guest memory must come from fds the front-end cannot shrink: after a truncate, the next touch of a mapped page
/// past the new end raises SIGBUS and ends the back-end process with every export in it.
/// </summary>
public sealed class MemorySealTests
{
    private const ulong Ring = 0;

    [Fact]
    public void An_unsealed_memfd_is_nacked_with_the_reason_and_the_connection_goes_on()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        using SafeFileHandle unsealed = TestNative.MemFd("unsealed", (long)BackendHarness.MemorySize, @sealed: false);
        h.Frontend.SetMemTable([new VhostUserMemoryRegion(0, BackendHarness.MemorySize, BackendHarness.UserBase, 0)], [unsealed], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
        Assert.Contains("no F_SEAL_SHRINK", h.LogText, StringComparison.Ordinal);

        // The sealed table that follows is accepted and a queue runs on it.
        Assert.Equal(0UL, h.SendMemTable());
        QueueEnd q = h.StartQueue(0, Ring);
        q.Driver.AddChain((0x20000, 32, true));
        Assert.True(q.KickAndWaitForCall(), h.LogText);
    }

    [Fact]
    public void A_regular_file_is_nacked_because_it_cannot_be_sealed()
    {
        string path = Path.GetTempFileName();
        try
        {
            using SafeFileHandle file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            RandomAccess.SetLength(file, (long)BackendHarness.MemorySize);
            using var h = new BackendHarness();
            h.Negotiate();
            h.Frontend.SetMemTable([new VhostUserMemoryRegion(0, BackendHarness.MemorySize, BackendHarness.UserBase, 0)], [file], needReply: true);
            Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
            Assert.Contains("not a sealable memfd", h.LogText, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void ADD_MEM_REG_with_an_unsealed_memfd_is_nacked()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        using SafeFileHandle unsealed = TestNative.MemFd("unsealed", 0x10000, @sealed: false);
        h.Frontend.Send(FrontendRequest.AddMemReg, new VhostUserSingleMemoryRegion(new VhostUserMemoryRegion(0x100000, 0x10000, 0x7e00_0000_0000, 0)), [unsealed], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.AddMemReg));
        Assert.Contains("no F_SEAL_SHRINK", h.LogText, StringComparison.Ordinal);
    }

    [Fact]
    public void With_unsealed_memory_allowed_an_unsealed_memfd_is_mapped()
    {
        using var h = new BackendHarness(allowUnsealedMemory: true);
        h.Negotiate();
        using SafeFileHandle unsealed = TestNative.MemFd("unsealed", (long)BackendHarness.MemorySize, @sealed: false);
        h.Frontend.SetMemTable([new VhostUserMemoryRegion(0, BackendHarness.MemorySize, BackendHarness.UserBase, 0)], [unsealed], needReply: true);
        Assert.Equal(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
    }
}
