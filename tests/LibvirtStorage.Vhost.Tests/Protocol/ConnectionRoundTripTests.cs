using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Protocol;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

public class ConnectionRoundTripTests
{
    private static byte[] Bytes<T>(T value)
        where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    /// <summary>A payload QEMU could send for each request, and how many fds go with it.</summary>
    internal static (byte[] Payload, int Fds) ValidMessage(FrontendRequest request)
    {
        var region = new VhostUserMemoryRegion(0x1_0000_0000, 1 << 20, 0x7f12_3400_0000, 0);
        var config = new byte[VhostUserConfigHeader.MaxPayloadSize];
        return request switch
        {
            FrontendRequest.SetMemTable => (MemTable(region, region with { GuestAddr = 0 }), 2),
            FrontendRequest.SetLogBase => (Bytes(new VhostUserLog { MmapSize = 4096 }), 1),
            FrontendRequest.SetLogFd or FrontendRequest.SetBackendReqFd or FrontendRequest.GpuSetSocket => ([], 1),
            FrontendRequest.SetVringAddr => (Bytes(new VhostUserVringAddress { Index = 1, DescUserAddr = 0x7f00_0000_1000, AvailUserAddr = 0x7f00_0000_2000, UsedUserAddr = 0x7f00_0000_3000 }), 0),
            FrontendRequest.SetVringKick or FrontendRequest.SetVringCall or FrontendRequest.SetVringErr => (Bytes(1UL), 1),
            FrontendRequest.SetVringNum or FrontendRequest.SetVringBase or FrontendRequest.GetVringBase or FrontendRequest.SetVringEnable
                or FrontendRequest.SetVringEndian or FrontendRequest.VringKick => (Bytes(new VhostUserVringState(1, 256)), 0),
            FrontendRequest.SetFeatures or FrontendRequest.SetProtocolFeatures or FrontendRequest.SendRarp or FrontendRequest.NetSetMtu
                or FrontendRequest.CloseCryptoSession or FrontendRequest.SetStatus => (Bytes(0x1_4000_0000UL), 0),
            FrontendRequest.IotlbMsg => (new byte[32], 0),
            FrontendRequest.GetConfig or FrontendRequest.SetConfig => (config[..VhostUserFrontendChannel.EncodeConfig(config, 0, 0, new byte[60])], 0),
            FrontendRequest.CreateCryptoSession => (new byte[100], 0),
            FrontendRequest.GetInflightFd => (Bytes(new VhostUserInflight(0, 0, 2, 128)), 0),
            FrontendRequest.SetInflightFd => (Bytes(new VhostUserInflight(8192, 0, 2, 128)), 1),
            FrontendRequest.AddMemReg => (Bytes(new VhostUserSingleMemoryRegion(region)), 1),
            FrontendRequest.RemMemReg => (Bytes(new VhostUserSingleMemoryRegion(region)), 0),
            FrontendRequest.GetSharedObject => (new byte[16], 0),
            FrontendRequest.SetDeviceStateFd => (new byte[8], 1),
            _ => ([], 0),
        };
    }

    private static byte[] MemTable(params VhostUserMemoryRegion[] regions)
    {
        var buffer = new byte[VhostUserMemoryTableHeader.MaxPayloadSize];
        return buffer[..VhostUserFrontendChannel.EncodeMemTable(buffer, regions)];
    }

    [Fact]
    public void Every_request_round_trips_with_its_payload_and_usable_fds()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        for (uint n = 1; n <= (uint)FrontendRequest.CheckDeviceState; n++)
        {
            var request = (FrontendRequest)n;
            var (payload, fdCount) = ValidMessage(request);
            var sent = new SafeFileHandle[fdCount];
            for (int i = 0; i < fdCount; i++)
                sent[i] = TestNative.EventFd();
            try
            {
                frontend.Send(request, payload, sent, needReply: n % 2 == 0);
                var message = backend.Receive();
                Assert.Equal(VhostUserRefusal.None, message.Refusal);
                Assert.Equal(request, message.Request);
                Assert.Equal(n % 2 == 0, message.NeedReply);
                Assert.Equal(1u, message.Header.Version);
                Assert.Equal(payload, message.Payload.ToArray());
                Assert.Equal(fdCount, message.Fds.Count);
                for (int i = 0; i < fdCount; i++)
                {
                    // The received fd is the same eventfd: a write on our copy is readable through theirs.
                    using var received = message.Fds.Take(i);
                    TestNative.WriteU64(sent[i], 40 + (ulong)i);
                    Assert.Equal(40 + (ulong)i, TestNative.ReadU64(received));
                }
            }
            finally
            {
                foreach (var fd in sent)
                    fd.Dispose();
            }
        }
    }

    [Fact]
    public void Mem_table_memfds_arrive_mapped_to_the_same_memory()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        using var mem0 = TestNative.MemFd("guest0", 1 << 16);
        using var mem1 = TestNative.MemFd("guest1", 1 << 16);
        VhostUserMemoryRegion[] regions = [new(0, 1 << 16, 0x7f00_0000_0000, 0), new(1 << 16, 1 << 16, 0x7f00_1000_0000, 0)];
        frontend.SetMemTable(regions, [mem0, mem1]);

        var message = backend.Receive();
        Assert.Equal(VhostUserRefusal.None, message.Refusal);
        var header = message.Read<VhostUserMemoryTableHeader>();
        Assert.Equal(2u, header.RegionCount);
        Assert.Equal(regions[1].GuestAddr, VhostUserMemoryTableHeader.ReadRegion(message.Payload, 1).GuestAddr);
        using var got1 = message.Fds.Take(1);
        RandomAccess.Write(mem1, "guest bytes"u8, 100);
        var buffer = new byte[11];
        RandomAccess.Read(got1, buffer, 100);
        Assert.Equal("guest bytes"u8.ToArray(), buffer);
    }

    [Fact]
    public void Replies_carry_the_request_number_the_reply_flag_and_fds()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;

        frontend.Send(FrontendRequest.GetFeatures);
        var request = backend.Receive();
        backend.ReplyU64(request.Header, 0x1_4000_0000UL);
        Assert.Equal(0x1_4000_0000UL, frontend.ReceiveU64Reply(FrontendRequest.GetFeatures));

        frontend.Send(FrontendRequest.GetInflightFd, new VhostUserInflight(0, 0, 1, 128));
        request = backend.Receive();
        using var inflight = TestNative.MemFd("inflight", 4096);
        var answer = new VhostUserInflight(4096, 0, 1, 128);
        backend.Reply(request.Header, MemoryMarshal.AsBytes(new ReadOnlySpan<VhostUserInflight>(in answer)), [inflight]);
        var reply = frontend.ReceiveReply(FrontendRequest.GetInflightFd);
        Assert.Equal(4096UL, MemoryMarshal.Read<VhostUserInflight>(reply).MmapSize);
        Assert.Equal(1, frontend.ReplyFds.Count);
        using var got = frontend.ReplyFds.Take(0);
        RandomAccess.Write(inflight, "inflight"u8, 0);
        var buffer = new byte[8];
        RandomAccess.Read(got, buffer, 0);
        Assert.Equal("inflight"u8.ToArray(), buffer);
    }

    [Fact]
    public void A_reply_ack_follows_a_need_reply_request()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        frontend.Send(FrontendRequest.SetVringNum, new VhostUserVringState(0, 256), needReply: true);
        var request = backend.Receive();
        Assert.True(request.NeedReply);
        backend.ReplyU64(request.Header, 0);
        Assert.Equal(0UL, frontend.ReceiveU64Reply(FrontendRequest.SetVringNum));
    }

    [Fact]
    public async Task Messages_split_into_single_bytes_are_reassembled()
    {
        var (a, b) = UnixSocket.CreatePair();
        using var backend = new VhostUserConnection(b);
        using var _a = a;
        var bytes = new byte[12 + 8];
        MemoryMarshal.Write(bytes, new VhostUserHeader((uint)FrontendRequest.SetFeatures, VhostUserHeaderFlags.Version1, 8));
        BitConverter.TryWriteBytes(bytes.AsSpan(12), 0xABCDUL);
        var writer = Task.Run(() =>
        {
            foreach (var x in bytes)
            {
                TestNative.WriteAll(a, [x]);
                Thread.Sleep(1);
            }
        });
        Assert.Equal(0xABCDUL, ReceiveU64(backend));
        await writer;
    }

    private static ulong ReceiveU64(VhostUserConnection backend)
    {
        var message = backend.Receive();
        Assert.Equal(VhostUserRefusal.None, message.Refusal);
        return message.Read<ulong>();
    }

    [Fact]
    public async Task Break_wakes_a_blocked_receive_and_later_calls_throw_the_first_reason()
    {
        var (frontend, backend) = TestNative.Pair();
        using var _f = frontend;
        using var _b = backend;
        var receiver = Task.Run(() => backend.Receive().Request);
        await Task.Delay(50);
        backend.Break("test shuts the export down");
        var protocol = await Assert.ThrowsAsync<VhostUserProtocolException>(() => receiver.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(VhostUserProtocolError.Aborted, protocol.Error);
        Assert.True(backend.IsBroken);
        var again = Assert.Throws<VhostUserProtocolException>(() => backend.Receive());
        Assert.Same(protocol, again);
        Assert.Throws<VhostUserProtocolException>(() => backend.ReplyU64(default, 0));
    }
}
