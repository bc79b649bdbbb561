using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

[CollectionDefinition(nameof(FdCountCollection), DisableParallelization = true)]
public sealed class FdCountCollection;

/// <summary>
/// Front-ends that break the rules (vhost-user issue: "Hostile front-ends"). Runs alone, so the
/// /proc/self/fd counts before and after each case see only its own fds.
/// </summary>
[Collection(nameof(FdCountCollection))]
public class HostileFrontendTests
{
    private static byte[] Header(uint request, uint flags, uint size)
    {
        var bytes = new byte[VhostUserHeader.Size];
        MemoryMarshal.Write(bytes, new VhostUserHeader(request, (VhostUserHeaderFlags)flags, size));
        return bytes;
    }

    private static (SafeFileHandle Peer, VhostUserConnection Backend) RawPair()
    {
        var (a, b) = UnixSocket.CreatePair();
        return (a, new VhostUserConnection(b));
    }

    private static VhostUserProtocolException ReceiveFails(VhostUserConnection backend) =>
        Assert.Throws<VhostUserProtocolException>(() => backend.Receive());

    private static VhostUserRefusal ReceiveRefusal(VhostUserConnection backend, out int fdCount)
    {
        var message = backend.Receive();
        fdCount = message.Fds.Count;
        return message.Refusal;
    }

    [Theory]
    [InlineData(4097u)]
    [InlineData(65536u)]
    [InlineData(uint.MaxValue)]
    public void An_oversized_size_field_breaks_the_connection_without_reading_or_allocating(uint size)
    {
        var (peer, backend) = RawPair();
        using var _p = peer;
        using var _b = backend;
        TestNative.WriteAll(peer, Header((uint)FrontendRequest.SetConfig, 1, size));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var ex = ReceiveFails(backend);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 64 * 1024);
        Assert.Equal(VhostUserProtocolError.Oversized, ex.Error);
        Assert.False(ex.ShouldReconnect);
        Assert.True(backend.IsBroken);
    }

    [Fact]
    public void A_payload_of_exactly_4096_bytes_is_read_and_refused_by_size()
    {
        var (peer, backend) = RawPair();
        using var _p = peer;
        using var _b = backend;
        TestNative.WriteAll(peer, [.. Header((uint)FrontendRequest.SetFeatures, 1, 4096), .. new byte[4096]]);
        Assert.Equal(VhostUserRefusal.PayloadSize, ReceiveRefusal(backend, out _));
        Assert.False(backend.IsBroken);
    }

    [Fact]
    public void A_truncated_payload_then_end_of_stream_breaks_with_reconnect()
    {
        var (peer, backend) = RawPair();
        using var _b = backend;
        TestNative.WriteAll(peer, [.. Header((uint)FrontendRequest.SetVringAddr, 1, 40), .. new byte[17]]);
        peer.Dispose();
        var ex = ReceiveFails(backend);
        Assert.Equal(VhostUserProtocolError.Truncated, ex.Error);
        Assert.True(ex.ShouldReconnect);
    }

    [Fact]
    public void A_header_cut_short_breaks_and_a_clean_close_is_peer_closed()
    {
        var (peer, backend) = RawPair();
        using (backend)
        {
            TestNative.WriteAll(peer, Header(1, 1, 0).AsSpan(0, 5));
            peer.Dispose();
            Assert.Equal(VhostUserProtocolError.Truncated, ReceiveFails(backend).Error);
        }
        var (peer2, backend2) = RawPair();
        using (backend2)
        {
            peer2.Dispose();
            var ex = ReceiveFails(backend2);
            Assert.Equal(VhostUserProtocolError.PeerClosed, ex.Error);
            Assert.True(ex.ShouldReconnect);
        }
    }

    [Theory]
    [InlineData(0x0u)] // version 0
    [InlineData(0x2u)] // version 2
    [InlineData(0x3u)]
    [InlineData(0x5u)] // REPLY on a request
    [InlineData(0x11u)] // reserved bit 4
    [InlineData(0x8000_0001u)]
    public void A_bad_header_breaks_the_connection(uint flags)
    {
        var (peer, backend) = RawPair();
        using var _p = peer;
        using var _b = backend;
        TestNative.WriteAll(peer, Header((uint)FrontendRequest.GetFeatures, flags, 0));
        var ex = ReceiveFails(backend);
        Assert.Equal(VhostUserProtocolError.BadHeader, ex.Error);
        Assert.False(ex.ShouldReconnect);
        Assert.Same(ex, ReceiveFails(backend)); // nothing else is processed
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(44u)]
    [InlineData(1000u)]
    [InlineData(uint.MaxValue)]
    public void Unknown_requests_are_refused_cleanly_and_the_connection_goes_on(uint request)
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        using var fd = TestNative.EventFd();
        int before = TestNative.OpenFdCount();
        frontend.SendRaw(new VhostUserHeader(request, VhostUserHeaderFlags.Version1, 20), new byte[20], [fd]);
        Assert.Equal(VhostUserRefusal.UnknownRequest, ReceiveRefusal(backend, out int fds));
        Assert.Equal(0, fds);
        Assert.Equal(before, TestNative.OpenFdCount()); // the received copy was closed
        frontend.Send(FrontendRequest.GetFeatures);
        Assert.Equal(VhostUserRefusal.None, ReceiveRefusal(backend, out _));
    }

    [Theory]
    [InlineData(FrontendRequest.GetFeatures, 8)]
    [InlineData(FrontendRequest.SetFeatures, 0)]
    [InlineData(FrontendRequest.SetFeatures, 16)]
    [InlineData(FrontendRequest.SetVringAddr, 32)]
    [InlineData(FrontendRequest.SetMemTable, 8)]
    [InlineData(FrontendRequest.SetMemTable, 8 + 9 * 32)]
    [InlineData(FrontendRequest.GetInflightFd, 20)]
    public void A_wrong_payload_size_is_refused_and_the_next_message_is_read(FrontendRequest request, int size)
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        frontend.Send(request, new byte[size]);
        Assert.Equal(VhostUserRefusal.PayloadSize, ReceiveRefusal(backend, out _));
        frontend.Send(FrontendRequest.SetOwner);
        Assert.Equal(VhostUserRefusal.None, ReceiveRefusal(backend, out _));
    }

    [Fact]
    public void Missing_fds_are_refused()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        frontend.Send(FrontendRequest.SetVringKick, 0UL); // no NoFd flag, no fd
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out _));
        frontend.Send(FrontendRequest.SetBackendReqFd);
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out _));
        var table = new byte[VhostUserMemoryTableHeader.MaxPayloadSize];
        int n = VhostUserFrontendChannel.EncodeMemTable(table, [new(0, 4096, 0, 0), new(4096, 4096, 4096, 0)]);
        using var one = TestNative.MemFd("one", 4096);
        frontend.Send(FrontendRequest.SetMemTable, table.AsSpan(0, n), [one]);
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out _));
    }

    [Fact]
    public void Extra_fds_are_refused_and_closed_not_leaked()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        var fds = new[] { TestNative.EventFd(), TestNative.EventFd(), TestNative.EventFd() };
        int before = TestNative.OpenFdCount();
        frontend.Send(FrontendRequest.SetFeatures, 0UL, fds);
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out int kept));
        Assert.Equal(0, kept);
        frontend.Send(FrontendRequest.SetVringCall, 0x100UL, fds[..1]); // "no fd" flag, yet an fd
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out _));
        Assert.Equal(before, TestNative.OpenFdCount());
        foreach (var fd in fds)
            fd.Dispose();
    }

    [Fact]
    public void More_than_32_fds_are_refused_and_all_of_them_closed()
    {
        var (peer, backend) = RawPair();
        using var _p = peer;
        using var _b = backend;
        using var eventFd = TestNative.EventFd();
        var many = Enumerable.Repeat((int)eventFd.DangerousGetHandle(), 40).ToArray();
        int before = TestNative.OpenFdCount();
        TestNative.SendWithFds(peer, [.. Header((uint)FrontendRequest.SetOwner, 1, 0)], many);
        Assert.Equal(VhostUserRefusal.FdCount, ReceiveRefusal(backend, out _));
        Assert.Equal(before, TestNative.OpenFdCount());
        Assert.False(backend.IsBroken);
    }

    [Fact]
    public void Fds_nobody_takes_are_closed_before_the_next_receive_and_on_dispose()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var kick = TestNative.EventFd();
        int before = TestNative.OpenFdCount();
        frontend.Send(FrontendRequest.SetVringKick, 0UL, [kick]);
        Assert.Equal(VhostUserRefusal.None, ReceiveRefusal(backend, out int held));
        Assert.Equal(1, held);
        Assert.Equal(before + 1, TestNative.OpenFdCount());
        frontend.Send(FrontendRequest.SetVringKick, 0UL, [kick]);
        Assert.Equal(VhostUserRefusal.None, ReceiveRefusal(backend, out _));
        Assert.Equal(before + 1, TestNative.OpenFdCount()); // the first copy was closed
        backend.Dispose();
        Assert.Equal(before - 1, TestNative.OpenFdCount()); // the second copy and the socket
    }

    [Fact]
    public void A_peer_that_closes_mid_message_with_fds_leaks_nothing()
    {
        var (peer, backend) = RawPair();
        using var eventFd = TestNative.EventFd();
        int before = TestNative.OpenFdCount();
        TestNative.SendWithFds(peer, [.. Header((uint)FrontendRequest.SetMemTable, 1, 40), .. new byte[10]], [(int)eventFd.DangerousGetHandle()]);
        peer.Dispose();
        Assert.Equal(VhostUserProtocolError.Truncated, ReceiveFails(backend).Error);
        backend.Dispose();
        Assert.Equal(before - 2, TestNative.OpenFdCount());
    }

    [Fact]
    public void Invalid_contents_are_refused()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        frontend.Send(FrontendRequest.SetVringAddr, new VhostUserVringAddress { DescUserAddr = 1 });
        Assert.Equal(VhostUserRefusal.InvalidPayload, ReceiveRefusal(backend, out _));
        using var mem = TestNative.MemFd("m", 4096);
        frontend.Send(FrontendRequest.AddMemReg, new VhostUserSingleMemoryRegion(new VhostUserMemoryRegion(ulong.MaxValue, 2, 0, 0)), [mem]);
        Assert.Equal(VhostUserRefusal.InvalidPayload, ReceiveRefusal(backend, out _));
    }
}
