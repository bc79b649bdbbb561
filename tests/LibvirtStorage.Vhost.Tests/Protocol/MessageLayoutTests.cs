using System.Runtime.CompilerServices;
using LibvirtStorage.Vhost.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

public class MessageLayoutTests
{
    [Fact]
    public void Payload_structs_have_the_wire_sizes_of_the_spec()
    {
        Assert.Equal(12, Unsafe.SizeOf<VhostUserHeader>());
        Assert.Equal(8, Unsafe.SizeOf<VhostUserU64>());
        Assert.Equal(8, Unsafe.SizeOf<VhostUserVringState>());
        Assert.Equal(40, Unsafe.SizeOf<VhostUserVringAddress>());
        Assert.Equal(32, Unsafe.SizeOf<VhostUserMemoryRegion>());
        Assert.Equal(8, Unsafe.SizeOf<VhostUserMemoryTableHeader>());
        Assert.Equal(40, Unsafe.SizeOf<VhostUserSingleMemoryRegion>());
        Assert.Equal(12, Unsafe.SizeOf<VhostUserConfigHeader>());
        Assert.Equal(256, Unsafe.SizeOf<VhostUserConfigBytes>());
        Assert.Equal(24, Unsafe.SizeOf<VhostUserInflight>());
        Assert.Equal(16, Unsafe.SizeOf<VhostUserLog>());
        Assert.Equal(8 + 8 * 32, VhostUserMemoryTableHeader.MaxPayloadSize);
    }

    [Theory]
    [InlineData(FrontendRequest.GetFeatures, 1)]
    [InlineData(FrontendRequest.SetMemTable, 5)]
    [InlineData(FrontendRequest.GetVringBase, 11)]
    [InlineData(FrontendRequest.GetProtocolFeatures, 15)]
    [InlineData(FrontendRequest.SetBackendReqFd, 21)]
    [InlineData(FrontendRequest.GetConfig, 24)]
    [InlineData(FrontendRequest.GetInflightFd, 31)]
    [InlineData(FrontendRequest.ResetDevice, 34)]
    [InlineData(FrontendRequest.GetMaxMemSlots, 36)]
    [InlineData(FrontendRequest.AddMemReg, 37)]
    [InlineData(FrontendRequest.RemMemReg, 38)]
    [InlineData(FrontendRequest.SetStatus, 39)]
    [InlineData(FrontendRequest.GetStatus, 40)]
    [InlineData(FrontendRequest.CheckDeviceState, 43)]
    public void Request_numbers_match_the_spec(FrontendRequest request, uint number) => Assert.Equal(number, (uint)request);

    [Fact]
    public void Every_request_from_1_to_43_is_defined_and_has_a_rule()
    {
        for (uint n = 1; n <= 43; n++)
        {
            Assert.True(Enum.IsDefined((FrontendRequest)n), $"request {n}");
            Assert.True(VhostUserMessageRules.For(n).IsKnown, $"rule for {n}");
        }
        Assert.False(VhostUserMessageRules.For(0).IsKnown);
        Assert.False(VhostUserMessageRules.For(44).IsKnown);
        Assert.False(VhostUserMessageRules.For(uint.MaxValue).IsKnown);
    }

    [Theory]
    [InlineData(VhostUserProtocolFeatures.Mq, 0)]
    [InlineData(VhostUserProtocolFeatures.LogShmfd, 1)]
    [InlineData(VhostUserProtocolFeatures.ReplyAck, 3)]
    [InlineData(VhostUserProtocolFeatures.BackendReq, 5)]
    [InlineData(VhostUserProtocolFeatures.Config, 9)]
    [InlineData(VhostUserProtocolFeatures.BackendSendFd, 10)]
    [InlineData(VhostUserProtocolFeatures.InflightShmfd, 12)]
    [InlineData(VhostUserProtocolFeatures.ResetDevice, 13)]
    [InlineData(VhostUserProtocolFeatures.ConfigureMemSlots, 15)]
    [InlineData(VhostUserProtocolFeatures.Status, 16)]
    [InlineData(VhostUserProtocolFeatures.DeviceState, 19)]
    public void Protocol_feature_bits_match_the_spec(VhostUserProtocolFeatures feature, int bit) =>
        Assert.Equal(1UL << bit, (ulong)feature);

    [Fact]
    public void Header_flag_and_backend_request_values_match_the_spec()
    {
        Assert.Equal(0x1u, (uint)VhostUserHeaderFlags.Version1);
        Assert.Equal(0x4u, (uint)VhostUserHeaderFlags.Reply);
        Assert.Equal(0x8u, (uint)VhostUserHeaderFlags.NeedReply);
        Assert.Equal(1UL << 30, (ulong)VhostUserVirtioFeatures.ProtocolFeatures);
        Assert.Equal(2u, (uint)BackendRequest.ConfigChangeMsg);
        Assert.Equal(8u, (uint)BackendRequest.SharedObjectLookup);
    }

    [Fact]
    public void Reply_carrying_requests_are_marked()
    {
        foreach (var r in new[] { FrontendRequest.GetFeatures, FrontendRequest.GetProtocolFeatures, FrontendRequest.GetVringBase, FrontendRequest.GetQueueNum, FrontendRequest.GetConfig, FrontendRequest.GetInflightFd, FrontendRequest.GetMaxMemSlots, FrontendRequest.GetStatus })
            Assert.True(VhostUserMessageRules.For((uint)r).HasReplyBody, r.ToString());
        foreach (var r in new[] { FrontendRequest.SetFeatures, FrontendRequest.SetMemTable, FrontendRequest.SetVringKick, FrontendRequest.SetConfig, FrontendRequest.AddMemReg })
            Assert.False(VhostUserMessageRules.For((uint)r).HasReplyBody, r.ToString());
    }
}
