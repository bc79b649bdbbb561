using System.Runtime.InteropServices;
using FsCheck.Xunit;
using LibvirtStorage.Vhost.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

public class MessageRulesTests
{
    private static byte[] Bytes<T>(T value)
        where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    private static byte[] MemTable(params VhostUserMemoryRegion[] regions)
    {
        var buffer = new byte[VhostUserMemoryTableHeader.MaxPayloadSize];
        int n = VhostUserFrontendChannel.EncodeMemTable(buffer, regions);
        return buffer[..n];
    }

    private static VhostUserRefusal Check(FrontendRequest r, byte[] payload, int fds) => VhostUserMessageRules.Check((uint)r, payload, fds);

    private static readonly VhostUserMemoryRegion Good = new(0, 1 << 20, 0x7f00_0000_0000, 0);

    [Fact]
    public void Fixed_size_requests_refuse_any_other_size()
    {
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.GetFeatures, [], 0));
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.GetFeatures, new byte[8], 0));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetFeatures, new byte[8], 0));
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetFeatures, new byte[4], 0));
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetVringAddr, new byte[39], 0));
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetInflightFd, new byte[20], 1));
    }

    [Fact]
    public void Unknown_request_numbers_are_refused_not_thrown()
    {
        Assert.Equal(VhostUserRefusal.UnknownRequest, VhostUserMessageRules.Check(0, [], 0));
        Assert.Equal(VhostUserRefusal.UnknownRequest, VhostUserMessageRules.Check(44, [], 0));
        Assert.Equal(VhostUserRefusal.UnknownRequest, VhostUserMessageRules.Check(0xDEAD_BEEF, new byte[8], 3));
    }

    [Fact]
    public void Mem_table_needs_one_fd_per_region_and_a_matching_size()
    {
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetMemTable, MemTable(Good), 1));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetMemTable, MemTable(Good, Good, Good), 3));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetMemTable, MemTable(Good, Good), 1));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetMemTable, MemTable(Good), 2));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetMemTable, MemTable(Good), 0));
        var lying = MemTable(Good, Good);
        lying[0] = 3; // nregions says 3, payload holds 2
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetMemTable, lying, 3));
        var zero = MemTable(Good);
        zero[0] = 0;
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetMemTable, zero, 1));
        var nine = new byte[8 + 9 * 32];
        nine[0] = 9;
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetMemTable, nine, 9));
    }

    [Fact]
    public void Regions_that_are_empty_or_wrap_are_invalid()
    {
        Assert.True(Good.IsValid());
        Assert.False(new VhostUserMemoryRegion(0, 0, 0, 0).IsValid());
        Assert.False(new VhostUserMemoryRegion(ulong.MaxValue - 10, 4096, 0, 0).IsValid());
        Assert.False(new VhostUserMemoryRegion(0, 4096, ulong.MaxValue, 0).IsValid());
        Assert.False(new VhostUserMemoryRegion(0, 4096, 0, ulong.MaxValue - 4095).IsValid());
        // The exclusive end must be representable: a region may end at 2^64 - 1, not at 2^64 (rust-vmm checked_add).
        Assert.True(new VhostUserMemoryRegion(ulong.MaxValue - 4096, 4096, 0, 0).IsValid());
        Assert.False(new VhostUserMemoryRegion(ulong.MaxValue - 4095, 4096, 0, 0).IsValid());
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetMemTable, MemTable(Good, new VhostUserMemoryRegion(0, 0, 0, 0)), 2));
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.AddMemReg, Bytes(new VhostUserSingleMemoryRegion(new VhostUserMemoryRegion(0, 0, 0, 0))), 1));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.AddMemReg, Bytes(new VhostUserSingleMemoryRegion(Good)), 1));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.AddMemReg, Bytes(new VhostUserSingleMemoryRegion(Good)), 0));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.RemMemReg, Bytes(new VhostUserSingleMemoryRegion(Good)), 0));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.RemMemReg, Bytes(new VhostUserSingleMemoryRegion(Good)), 1));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.RemMemReg, Bytes(new VhostUserSingleMemoryRegion(Good)), 2));
    }

    [Theory]
    [InlineData(0x0UL, 1, VhostUserRefusal.None)]
    [InlineData(0x5UL, 1, VhostUserRefusal.None)]
    [InlineData(0x105UL, 0, VhostUserRefusal.None)]
    [InlineData(0x5UL, 0, VhostUserRefusal.FdCount)]
    [InlineData(0x105UL, 1, VhostUserRefusal.FdCount)]
    [InlineData(0x205UL, 1, VhostUserRefusal.InvalidPayload)]
    public void Vring_fd_messages_match_the_no_fd_flag(ulong value, int fds, VhostUserRefusal expected)
    {
        foreach (var r in new[] { FrontendRequest.SetVringKick, FrontendRequest.SetVringCall, FrontendRequest.SetVringErr })
            Assert.Equal(expected, Check(r, Bytes(value), fds));
    }

    [Fact]
    public void Vring_addresses_need_split_ring_alignment_and_known_flags()
    {
        var ok = new VhostUserVringAddress { Index = 0, DescUserAddr = 0x1000, AvailUserAddr = 0x2002, UsedUserAddr = 0x3004 };
        Assert.True(ok.IsValid());
        Assert.False((ok with { DescUserAddr = 0x1008 }).IsValid());
        Assert.False((ok with { AvailUserAddr = 0x2001 }).IsValid());
        Assert.False((ok with { UsedUserAddr = 0x3002 }).IsValid());
        Assert.True((ok with { Flags = VhostUserVringAddress.FlagLog }).IsValid());
        Assert.False((ok with { Flags = 2 }).IsValid());
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetVringAddr, Bytes(ok with { UsedUserAddr = 1 }), 0));
    }

    [Fact]
    public void Config_payload_is_header_plus_size_bytes_within_256()
    {
        var buffer = new byte[VhostUserConfigHeader.MaxPayloadSize];
        int n = VhostUserFrontendChannel.EncodeConfig(buffer, 0, 0, new byte[60]);
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.GetConfig, buffer[..n], 0));
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.GetConfig, buffer[..(n - 1)], 0));
        n = VhostUserFrontendChannel.EncodeConfig(buffer, 250, 0, new byte[10]); // 250 + 10 > 256
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetConfig, buffer[..n], 0));
        n = VhostUserFrontendChannel.EncodeConfig(buffer, 0, 2, new byte[4]); // flags 2 undefined
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetConfig, buffer[..n], 0));
        n = VhostUserFrontendChannel.EncodeConfig(buffer, 0, VhostUserConfigHeader.FlagsMigration, new byte[256]);
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetConfig, buffer[..n], 0));
        Assert.Equal(VhostUserRefusal.PayloadSize, Check(FrontendRequest.SetConfig, new byte[12], 0));
    }

    [Fact]
    public void Inflight_descriptions_need_queues_and_a_buffer()
    {
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.GetInflightFd, Bytes(new VhostUserInflight(0, 0, 2, 128)), 0));
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.GetInflightFd, Bytes(new VhostUserInflight(0, 0, 0, 128)), 0));
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetInflightFd, Bytes(new VhostUserInflight(8192, 0, 2, 128)), 1));
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetInflightFd, Bytes(new VhostUserInflight(0, 0, 2, 128)), 1));
        Assert.Equal(VhostUserRefusal.InvalidPayload, Check(FrontendRequest.SetInflightFd, Bytes(new VhostUserInflight(8192, ulong.MaxValue, 2, 128)), 1));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetInflightFd, Bytes(new VhostUserInflight(8192, 0, 2, 128)), 0));
    }

    [Fact]
    public void Fd_only_requests_need_exactly_one_fd()
    {
        Assert.Equal(VhostUserRefusal.None, Check(FrontendRequest.SetBackendReqFd, [], 1));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetBackendReqFd, [], 0));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetBackendReqFd, [], 2));
        Assert.Equal(VhostUserRefusal.FdCount, Check(FrontendRequest.SetFeatures, new byte[8], 1));
    }

    [Property(MaxTest = 2000)]
    public bool Random_requests_payloads_and_fd_counts_never_throw(uint request, byte[] payload, byte fds)
    {
        // Small request numbers are the interesting ones; keep most of the cases among them.
        uint r = request % 64;
        var refusal = VhostUserMessageRules.Check(r, payload ?? [], fds % 40);
        return Enum.IsDefined(refusal);
    }

    [Property(MaxTest = 500)]
    public bool Random_mem_tables_are_accepted_only_when_every_rule_holds(ulong[] words, byte count, byte fds)
    {
        words ??= [];
        int regions = count % 10;
        var payload = new byte[8 + regions * 32];
        payload[0] = (byte)regions;
        for (int i = 0; i < words.Length && 8 + i * 8 + 8 <= payload.Length; i++)
            BitConverter.TryWriteBytes(payload.AsSpan(8 + i * 8), words[i]);
        var refusal = Check(FrontendRequest.SetMemTable, payload, fds % 10);
        bool allValid = true;
        for (int i = 0; i < regions; i++)
            allValid &= VhostUserMemoryTableHeader.ReadRegion(payload, i).IsValid();
        bool shouldPass = regions is >= 1 and <= 8 && fds % 10 == regions && allValid;
        return (refusal == VhostUserRefusal.None) == shouldPass
            && VhostUserMemoryTableHeader.IsValid(payload, fds % 10) == shouldPass;
    }
}
