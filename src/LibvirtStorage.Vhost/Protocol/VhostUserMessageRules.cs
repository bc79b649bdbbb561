using System.Runtime.InteropServices;

namespace LibvirtStorage.Vhost.Protocol;

/// <summary>What one request may carry: payload size range, fd count range, and whether it always gets a reply.</summary>
/// <param name="MinSize">Smallest payload size in bytes.</param>
/// <param name="MaxSize">Largest payload size in bytes (equal to <paramref name="MinSize"/> for fixed layouts).</param>
/// <param name="MinFds">Fewest fds.</param>
/// <param name="MaxFds">Most fds.</param>
/// <param name="HasReplyBody">The request always gets a reply (GET_*), so a refusal must still answer it.</param>
internal readonly record struct VhostUserMessageRule(int MinSize, int MaxSize, int MinFds, int MaxFds, bool HasReplyBody)
{
    public bool IsKnown => MaxSize >= 0;
    public bool IsExactSize => MinSize == MaxSize;
}

/// <summary>
/// The table of expected payload size and fd count per <see cref="FrontendRequest"/> (vhost-user.rst "Front-end
/// message types" and "Communication"), and the content checks for the variable layouts. The connection
/// applies it to every received message, so nothing downstream sees a payload of the wrong shape.
/// </summary>
internal static class VhostUserMessageRules
{
    private static readonly VhostUserMessageRule Unknown = new(-1, -1, 0, 0, false);

    // Indexed by request number. Sizes follow what QEMU puts on the wire, which differs from the spec's prose in
    // two places: SET_LOG_BASE carries the 16-byte log description, and the inflight description is 24 bytes.
    private static readonly VhostUserMessageRule[] Rules = Build();

    private static VhostUserMessageRule[] Build()
    {
        var r = new VhostUserMessageRule[(int)FrontendRequest.CheckDeviceState + 1];
        Array.Fill(r, Unknown);
        static VhostUserMessageRule Fixed(int size, int fds = 0, bool reply = false) => new(size, size, fds, fds, reply);
        const int u64 = VhostUserU64.Size, state = VhostUserVringState.Size;

        r[(int)FrontendRequest.GetFeatures] = Fixed(0, reply: true);
        r[(int)FrontendRequest.SetFeatures] = Fixed(u64);
        r[(int)FrontendRequest.SetOwner] = Fixed(0);
        r[(int)FrontendRequest.ResetOwner] = Fixed(0);
        r[(int)FrontendRequest.SetMemTable] = new(VhostUserMemoryTableHeader.PayloadSizeFor(1), VhostUserMemoryTableHeader.MaxPayloadSize, 1, VhostUserMemoryTableHeader.MaxRegions, false);
        r[(int)FrontendRequest.SetLogBase] = new(VhostUserLog.Size, VhostUserLog.Size, 0, 1, true);
        r[(int)FrontendRequest.SetLogFd] = Fixed(0, fds: 1);
        r[(int)FrontendRequest.SetVringNum] = Fixed(state);
        r[(int)FrontendRequest.SetVringAddr] = Fixed(VhostUserVringAddress.Size);
        r[(int)FrontendRequest.SetVringBase] = Fixed(state);
        r[(int)FrontendRequest.GetVringBase] = Fixed(state, reply: true);
        r[(int)FrontendRequest.SetVringKick] = new(u64, u64, 0, 1, false);
        r[(int)FrontendRequest.SetVringCall] = new(u64, u64, 0, 1, false);
        r[(int)FrontendRequest.SetVringErr] = new(u64, u64, 0, 1, false);
        r[(int)FrontendRequest.GetProtocolFeatures] = Fixed(0, reply: true);
        r[(int)FrontendRequest.SetProtocolFeatures] = Fixed(u64);
        r[(int)FrontendRequest.GetQueueNum] = Fixed(0, reply: true);
        r[(int)FrontendRequest.SetVringEnable] = Fixed(state);
        r[(int)FrontendRequest.SendRarp] = Fixed(u64);
        r[(int)FrontendRequest.NetSetMtu] = Fixed(u64);
        r[(int)FrontendRequest.SetBackendReqFd] = Fixed(0, fds: 1);
        r[(int)FrontendRequest.IotlbMsg] = Fixed(32, reply: true); // struct vhost_iotlb_msg: 3 x u64, 2 x u8, padded to 32
        r[(int)FrontendRequest.SetVringEndian] = Fixed(state);
        r[(int)FrontendRequest.GetConfig] = new(VhostUserConfigHeader.Size + 1, VhostUserConfigHeader.MaxPayloadSize, 0, 0, true);
        r[(int)FrontendRequest.SetConfig] = new(VhostUserConfigHeader.Size + 1, VhostUserConfigHeader.MaxPayloadSize, 0, 0, false);
        r[(int)FrontendRequest.CreateCryptoSession] = new(0, UnixSocket.MaxPayloadSize, 0, 0, true); // layout not modelled
        r[(int)FrontendRequest.CloseCryptoSession] = Fixed(u64);
        r[(int)FrontendRequest.PostcopyAdvise] = Fixed(0, reply: true);
        r[(int)FrontendRequest.PostcopyListen] = Fixed(0);
        r[(int)FrontendRequest.PostcopyEnd] = Fixed(0, reply: true);
        r[(int)FrontendRequest.GetInflightFd] = Fixed(VhostUserInflight.Size, reply: true);
        r[(int)FrontendRequest.SetInflightFd] = Fixed(VhostUserInflight.Size, fds: 1);
        r[(int)FrontendRequest.GpuSetSocket] = Fixed(0, fds: 1);
        r[(int)FrontendRequest.ResetDevice] = Fixed(0);
        r[(int)FrontendRequest.VringKick] = Fixed(state);
        r[(int)FrontendRequest.GetMaxMemSlots] = Fixed(0, reply: true);
        r[(int)FrontendRequest.AddMemReg] = Fixed(VhostUserSingleMemoryRegion.Size, fds: 1);
        // "No file descriptors SHOULD be passed ... the back-end MAY accept messages with one": accepted, and
        // the connection closes it unused like every fd nobody takes.
        r[(int)FrontendRequest.RemMemReg] = new(VhostUserSingleMemoryRegion.Size, VhostUserSingleMemoryRegion.Size, 0, 1, false);
        r[(int)FrontendRequest.SetStatus] = Fixed(u64);
        r[(int)FrontendRequest.GetStatus] = Fixed(0, reply: true);
        r[(int)FrontendRequest.GetSharedObject] = Fixed(16, reply: true);
        r[(int)FrontendRequest.SetDeviceStateFd] = Fixed(8, fds: 1, reply: true);
        r[(int)FrontendRequest.CheckDeviceState] = Fixed(0, reply: true);
        return r;
    }

    /// <summary>The rule for a request number; unknown numbers get a rule whose <see cref="VhostUserMessageRule.IsKnown"/> is false.</summary>
    public static VhostUserMessageRule For(uint request) => request < (uint)Rules.Length ? Rules[request] : Unknown;

    /// <summary>Checks a received request against the table, then the layout's own content rules.</summary>
    public static VhostUserRefusal Check(uint request, ReadOnlySpan<byte> payload, int fdCount)
    {
        var rule = For(request);
        if (!rule.IsKnown)
            return VhostUserRefusal.UnknownRequest;
        if (payload.Length < rule.MinSize || payload.Length > rule.MaxSize)
            return VhostUserRefusal.PayloadSize;
        if (fdCount < rule.MinFds || fdCount > rule.MaxFds)
            return VhostUserRefusal.FdCount;
        return CheckContents((FrontendRequest)request, payload, fdCount);
    }

    private static VhostUserRefusal CheckContents(FrontendRequest request, ReadOnlySpan<byte> payload, int fdCount)
    {
        switch (request)
        {
            case FrontendRequest.SetMemTable:
                // Size and fd count both follow from nregions; report the size first, as the table would.
                var count = MemoryMarshal.Read<VhostUserMemoryTableHeader>(payload).RegionCount;
                if (count is 0 or > VhostUserMemoryTableHeader.MaxRegions || payload.Length != VhostUserMemoryTableHeader.PayloadSizeFor(count))
                    return VhostUserRefusal.PayloadSize;
                if (fdCount != (int)count)
                    return VhostUserRefusal.FdCount;
                return Valid(VhostUserMemoryTableHeader.RegionsAreValid(payload));
            case FrontendRequest.SetVringKick or FrontendRequest.SetVringCall or FrontendRequest.SetVringErr:
                // The fd count must agree with the "no fd" flag: one fd without it, none with it.
                var value = MemoryMarshal.Read<ulong>(payload);
                if (VhostUserVringFd.HasReservedBits(value))
                    return VhostUserRefusal.InvalidPayload;
                return fdCount == (VhostUserVringFd.HasFd(value) ? 1 : 0) ? VhostUserRefusal.None : VhostUserRefusal.FdCount;
            case FrontendRequest.SetVringAddr:
                return Valid(MemoryMarshal.Read<VhostUserVringAddress>(payload).IsValid());
            case FrontendRequest.GetConfig or FrontendRequest.SetConfig:
                return Valid(VhostUserConfigHeader.IsValid(payload));
            case FrontendRequest.GetInflightFd:
                return Valid(MemoryMarshal.Read<VhostUserInflight>(payload).IsValidRequest());
            case FrontendRequest.SetInflightFd:
                return Valid(MemoryMarshal.Read<VhostUserInflight>(payload).IsValidBuffer());
            case FrontendRequest.AddMemReg or FrontendRequest.RemMemReg:
                return Valid(MemoryMarshal.Read<VhostUserSingleMemoryRegion>(payload).IsValid());
            case FrontendRequest.SetLogBase:
                return Valid(MemoryMarshal.Read<VhostUserLog>(payload).IsValid());
            default:
                return VhostUserRefusal.None;
        }
    }

    private static VhostUserRefusal Valid(bool ok) => ok ? VhostUserRefusal.None : VhostUserRefusal.InvalidPayload;
}
