using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// Front-ends that break the message-order and content rules. With REPLY_ACK and NEED_REPLY the request is
/// nacked and nothing changes; without, the connection is broken with the reason logged. Either way no request
/// touches memory outside the table, and the back-end never crashes or hangs.
/// </summary>
[Collection(nameof(FdCountCollection))]
public class HostileDispatchTests
{
    private const ulong Ring = 0x0;

    private static void AssertBroken(BackendHarness h, string reason)
    {
        Assert.True(h.WaitEnded(), "the back-end did not end the connection");
        Assert.NotNull(h.Ended);
        Assert.Contains(reason, h.Ended!.Message, StringComparison.Ordinal);
        Assert.Contains(reason, h.LogText, StringComparison.Ordinal);
    }

    private static void AssertStillServing(BackendHarness h)
    {
        h.Frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal(2UL, h.Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        Assert.Null(h.Ended);
    }

    [Fact]
    public void A_kick_fd_before_any_memory_table_breaks_the_connection()
    {
        using var h = new BackendHarness();
        h.Negotiate(replyAck: false);
        h.Frontend.Send(FrontendRequest.SetVringNum, new VhostUserVringState(0, 64));
        h.Frontend.Send(FrontendRequest.SetVringKick, new VhostUserU64(0), [h.EventFd()]);
        AssertBroken(h, "kick fd arrived before any memory table");
    }

    [Fact]
    public void Ring_addresses_before_any_memory_table_are_nacked()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringNum, new VhostUserVringState(0, 64)));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringAddr, BackendHarness.Address(0, Ring)));
        Assert.Contains("before any memory table", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Theory]
    [InlineData(FrontendRequest.SetVringNum)]
    [InlineData(FrontendRequest.SetVringBase)]
    [InlineData(FrontendRequest.SetVringEnable)]
    public void A_vring_index_out_of_range_is_nacked(FrontendRequest request)
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.NotEqual(0UL, h.Request(request, new VhostUserVringState(2, 1)));
        Assert.Contains("vring index 2 is out of range", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Fact]
    public void A_vring_index_out_of_range_without_reply_ack_breaks_the_connection()
    {
        using var h = new BackendHarness();
        h.Negotiate(replyAck: false);
        h.Frontend.Send(FrontendRequest.SetVringNum, new VhostUserVringState(255, 64));
        AssertBroken(h, "vring index 255 is out of range");
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(3u)]
    [InlineData(100u)]
    [InlineData(512u)] // a power of two above the device's maximum (256)
    [InlineData(65536u)]
    public void Bad_queue_sizes_are_nacked(uint size)
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringNum, new VhostUserVringState(0, size)));
        Assert.Contains($"queue size {size}", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Theory]
    [InlineData(BackendHarness.UserBase + BackendHarness.MemorySize)] // just past the region
    [InlineData(BackendHarness.UserBase + BackendHarness.MemorySize - 0x100)] // straddles the end
    [InlineData(0x1000ul)] // not a front-end address at all
    public void Ring_addresses_outside_guest_memory_are_nacked(ulong descUserAddress)
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.Equal(0UL, h.SendMemTable());
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringNum, new VhostUserVringState(0, 64)));
        var address = BackendHarness.Address(0, Ring);
        address.DescUserAddr = descUserAddress;
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringAddr, address));
        Assert.Contains("are not inside guest memory", h.LogText, StringComparison.Ordinal);
        Assert.False(h.Backend.Dispatcher.Vring(0).HasAddresses);
        AssertStillServing(h);
    }

    [Fact]
    public void Overlapping_and_oversized_regions_are_nacked_and_the_old_table_stays()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.Equal(0UL, h.SendMemTable());
        h.Frontend.SetMemTable(
            [new VhostUserMemoryRegion(0, 0x10000, BackendHarness.UserBase, 0), new VhostUserMemoryRegion(0x8000, 0x10000, 0x7e00_0000_0000, 0)],
            [h.MemFd, h.MemFd], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
        Assert.Contains("overlap", h.LogText, StringComparison.Ordinal);

        // Larger than the memfd: mmap would succeed and the first access past the file's end would raise SIGBUS.
        Assert.NotEqual(0UL, h.SendMemTable(size: BackendHarness.MemorySize * 2));
        Assert.Contains("-byte file", h.LogText, StringComparison.Ordinal);

        // The first table is still in force: a queue starts and runs.
        QueueEnd q = h.StartQueue(0, Ring);
        q.Driver.AddChain((0x20000, 32, true));
        Assert.True(q.KickAndWaitForCall(), h.LogText);
    }

    [Fact]
    public void Missing_fds_are_nacked()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.Equal(0UL, h.SendMemTable());
        // The "no fd" flag: polling is not supported.
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringKick, new VhostUserU64(0x100)));
        Assert.Contains("polling without a kick fd", h.LogText, StringComparison.Ordinal);
        // No flag and no fd: refused by the message rules.
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringCall, new VhostUserU64(0)));
        // A memory table whose region count says two, with one fd.
        h.Frontend.SetMemTable(
            [new VhostUserMemoryRegion(0, 0x10000, BackendHarness.UserBase, 0), new VhostUserMemoryRegion(0x10000, 0x10000, BackendHarness.UserBase + 0x10000, 0x10000)],
            [h.MemFd], needReply: true);
        Assert.NotEqual(0UL, h.Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable));
        Assert.Contains("refused (FdCount)", h.LogText, StringComparison.Ordinal);
        AssertStillServing(h);
    }

    [Fact]
    public void Features_that_were_not_offered_are_nacked()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetFeatures, new VhostUserU64(1UL << 40)));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)VhostUserProtocolFeatures.LogShmfd)));
        AssertStillServing(h);
    }

    [Fact]
    public void An_unknown_request_without_reply_ack_breaks_the_connection()
    {
        using var h = new BackendHarness();
        h.Negotiate(replyAck: false);
        h.Frontend.SendRaw(new VhostUserHeader(99, VhostUserHeaderFlags.Version1, 0), default);
        AssertBroken(h, "request 99: refused (UnknownRequest)");
    }

    [Fact]
    public void An_unsupported_request_that_expects_a_reply_body_breaks_the_connection()
    {
        using var h = new BackendHarness();
        h.Negotiate();
        h.Frontend.Send(FrontendRequest.GetStatus);
        AssertBroken(h, "GetStatus: not supported");
    }

    [Fact]
    public void Ring_setup_changes_on_a_started_queue_are_nacked()
    {
        using var h = new BackendHarness();
        h.StartServing();
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringNum, new VhostUserVringState(0, 32)));
        Assert.NotEqual(0UL, h.Request(FrontendRequest.SetVringAddr, BackendHarness.Address(0, 0x8000)));
        Assert.Contains("vring 0 is started", h.LogText, StringComparison.Ordinal);
        Assert.True(h.Backend.Dispatcher.Vring(0).IsStarted);
    }

    [Fact]
    public void A_ring_the_driver_corrupts_marks_only_that_queue_broken_and_signals_its_error_fd()
    {
        using var h = new BackendHarness();
        QueueEnd q = h.StartServing();
        var err = h.EventFd();
        Assert.Equal(0UL, h.Request(FrontendRequest.SetVringErr, new VhostUserU64(0), [err]));
        QueueEnd other = h.StartQueue(1, 0x4000);

        q.Driver.SetAvailIdx(1000); // more than the queue size ahead of last_avail_idx
        TestNative.WriteU64(q.Kick, 1);
        Assert.True(BackendHarness.WaitReadable(err, 5000), h.LogText);
        Assert.Contains("queue 0 broken: driver ring error: AvailIndexTooFar", h.LogText, StringComparison.Ordinal);
        Assert.Equal(0, h.Device.Chains);

        // The other queue and the connection go on.
        other.Driver.AddChain((0x20000, 32, true));
        Assert.True(other.KickAndWaitForCall(), h.LogText);
        AssertStillServing(h);
    }
}
