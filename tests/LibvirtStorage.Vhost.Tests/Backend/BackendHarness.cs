using System.Runtime.InteropServices;
using LibvirtStorage.Vhost.Backend;
using LibvirtStorage.Vhost.Memory;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Protocol;
using LibvirtStorage.Vhost.Tests.Virtqueue;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Backend;

/// <summary>
/// A <see cref="VhostUserBackend"/> running on its own thread at one end of a socketpair, a QEMU-shaped
/// <see cref="VhostUserFrontendChannel"/> at the other, and 1 MiB of memfd "guest memory" that the test maps too,
/// so it can play the guest driver (<see cref="FakeDriver"/>) while the back-end serves the rings.
/// </summary>
internal sealed partial class BackendHarness : IDisposable
{
    public const ulong MemorySize = 1 << 20;
    public const ulong UserBase = 0x7f00_0000_0000;
    public const ushort QueueSize = 64;

    private Thread _runner;
    private readonly GuestRegion _region;
    private readonly GuestMemoryMap _driverMap;
    private readonly ListLogger _log = new();
    private readonly List<SafeFileHandle> _eventFds = [];

    private readonly int _queueThreads;

    public BackendHarness(PatternDevice? device = null, bool allowUnsealedMemory = false, int queueThreads = 0)
    {
        Device = device ?? new PatternDevice();
        _queueThreads = queueThreads;
        (Frontend, Backend, _runner) = Connect(Device, allowUnsealedMemory);
        MemFd = TestNative.MemFd("guest", (long)MemorySize);
        _region = GuestRegion.Map(MemFd, 0, new GuestAddress(0), MemorySize, UserBase);
        Assert.True(GuestMemoryMap.TryCreate([_region], out GuestMemoryMap? map, out _));
        _driverMap = map!;
    }

    public PatternDevice Device { get; private set; }

    public VhostUserFrontendChannel Frontend { get; private set; }

    public VhostUserBackend Backend { get; private set; }

    public SafeFileHandle MemFd { get; }

    public GuestMemory Memory => _driverMap.Memory;

    public VhostUserProtocolException? Ended { get; private set; }

    public string LogText => _log.Text;

    /// <summary>
    /// A back-end restart as QEMU's <c>reconnect=</c> sees it: the connection and the back-end go away (Dispose
    /// joins its workers), and a new back-end with <paramref name="device"/> is served on a new connection. Guest
    /// memory, the rings in it and the eventfds stay, as they do in QEMU.
    /// </summary>
    public void Reconnect(PatternDevice device)
    {
        Frontend.Dispose();
        Backend.Dispose();
        Assert.True(_runner.Join(5000), "the old back-end did not stop");
        Ended = null;
        Device = device;
        (Frontend, Backend, _runner) = Connect(device);
    }

    private (VhostUserFrontendChannel, VhostUserBackend, Thread) Connect(PatternDevice device, bool allowUnsealedMemory = false)
    {
        var (frontend, backend) = UnixSocket.CreatePair();
        var backendInstance = new VhostUserBackend(backend, device, _log, allowUnsealedMemory, _queueThreads);
        var runner = new Thread(() => Ended = backendInstance.Run()) { IsBackground = true, Name = "test back-end" };
        runner.Start();
        return (new VhostUserFrontendChannel(frontend), backendInstance, runner);
    }

    /// <summary>Sends a request with NEED_REPLY and returns the REPLY_ACK value (0 = success).</summary>
    public ulong Request<T>(FrontendRequest request, in T payload, ReadOnlySpan<SafeHandle> fds = default)
        where T : unmanaged
    {
        Frontend.Send(request, payload, fds, needReply: true);
        return Frontend.ReceiveU64Reply(request);
    }

    public ulong Request(FrontendRequest request)
    {
        Frontend.Send(request, needReply: true);
        return Frontend.ReceiveU64Reply(request);
    }

    /// <summary>QEMU's order: features, protocol features (with REPLY_ACK), queue count, owner, acked features.</summary>
    public void Negotiate(bool eventIdx = false, bool replyAck = true, bool inflight = false)
    {
        Frontend.Send(FrontendRequest.GetFeatures);
        ulong features = Frontend.ReceiveU64Reply(FrontendRequest.GetFeatures);
        Assert.Equal(VhostUserRequestDispatcher.FrameworkFeatures | PatternDevice.DeviceFeature, features);
        Frontend.Send(FrontendRequest.GetProtocolFeatures);
        var offered = (VhostUserProtocolFeatures)Frontend.ReceiveU64Reply(FrontendRequest.GetProtocolFeatures);
        Assert.True(offered.HasFlag(VhostUserProtocolFeatures.ReplyAck | VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config));
        var wanted = VhostUserProtocolFeatures.Mq | VhostUserProtocolFeatures.Config | VhostUserProtocolFeatures.ConfigureMemSlots
            | (replyAck ? VhostUserProtocolFeatures.ReplyAck : 0) | (inflight ? VhostUserProtocolFeatures.InflightShmfd : 0);
        Frontend.Send(FrontendRequest.SetProtocolFeatures, new VhostUserU64((ulong)wanted));
        Frontend.Send(FrontendRequest.GetQueueNum);
        Assert.Equal((ulong)Device.NumQueues, Frontend.ReceiveU64Reply(FrontendRequest.GetQueueNum));
        Frontend.Send(FrontendRequest.SetOwner);
        ulong acked = features & ~(eventIdx ? 0 : VhostUserRequestDispatcher.VirtioRingFEventIdx);
        Frontend.Send(FrontendRequest.SetFeatures, new VhostUserU64(acked), needReply: replyAck);
        if (replyAck)
            Assert.Equal(0UL, Frontend.ReceiveU64Reply(FrontendRequest.SetFeatures));
    }

    /// <summary>SET_MEM_TABLE with the whole memfd at GPA 0; returns the REPLY_ACK.</summary>
    public ulong SendMemTable(ulong guestAddress = 0, ulong size = MemorySize, ulong userAddress = UserBase)
    {
        Frontend.SetMemTable([new VhostUserMemoryRegion(guestAddress, size, userAddress, 0)], [MemFd], needReply: true);
        return Frontend.ReceiveU64Reply(FrontendRequest.SetMemTable);
    }

    /// <summary>A new eventfd the harness closes at the end.</summary>
    public SafeFileHandle EventFd()
    {
        SafeFileHandle fd = TestNative.EventFd();
        _eventFds.Add(fd);
        return fd;
    }

    /// <summary>
    /// Sets up vring <paramref name="index"/> as QEMU's vhost_virtqueue_start does (NUM, BASE, ADDR, KICK, CALL,
    /// ENABLE) with its rings at <paramref name="ringBase"/>, and returns the driver for it.
    /// </summary>
    public QueueEnd StartQueue(int index, ulong ringBase, ushort baseIndex = 0, bool eventIdx = false, FakeDriver? driver = null)
    {
        driver ??= new FakeDriver(Memory, QueueSize, ringBase, ringBase + 0x1000, ringBase + 0x2000) { EventIdx = eventIdx };
        var end = new QueueEnd(index, driver, EventFd(), EventFd());
        Assert.Equal(0UL, Request(FrontendRequest.SetVringNum, new VhostUserVringState((uint)index, QueueSize)));
        Assert.Equal(0UL, Request(FrontendRequest.SetVringBase, new VhostUserVringState((uint)index, baseIndex)));
        Assert.Equal(0UL, Request(FrontendRequest.SetVringAddr, Address(index, ringBase)));
        Assert.Equal(0UL, Request(FrontendRequest.SetVringKick, new VhostUserU64((ulong)index), [end.Kick]));
        Assert.Equal(0UL, Request(FrontendRequest.SetVringCall, new VhostUserU64((ulong)index), [end.Call]));
        Assert.Equal(0UL, Request(FrontendRequest.SetVringEnable, new VhostUserVringState((uint)index, 1)));
        return end;
    }

    /// <summary>Negotiates, sends the memory table and starts queue 0 with its rings at GPA 0.</summary>
    public QueueEnd StartServing(bool eventIdx = false)
    {
        Negotiate(eventIdx);
        Assert.Equal(0UL, SendMemTable());
        return StartQueue(0, 0x0, eventIdx: eventIdx);
    }

    public static VhostUserVringAddress Address(int index, ulong ringBase, ulong userBase = UserBase) => new()
    {
        Index = (uint)index,
        DescUserAddr = userBase + ringBase,
        AvailUserAddr = userBase + ringBase + 0x1000,
        UsedUserAddr = userBase + ringBase + 0x2000,
    };

    public byte[] ReadGuest(ulong address, int length)
    {
        var bytes = new byte[length];
        Assert.True(Memory.TryGetSegments(new GuestAddress(address), (ulong)length, writable: false, out GuestSegments segments));
        segments.CopyTo(bytes);
        return bytes;
    }

    /// <summary>Waits for the back-end thread to return from Run.</summary>
    public bool WaitEnded(int milliseconds = 5000) => _runner.Join(milliseconds);

    public void Dispose()
    {
        Frontend.Dispose();
        Backend.Dispose();
        Assert.True(_runner.Join(5000), "the back-end did not stop");
        _driverMap.Release();
        _region.Dispose();
        MemFd.Dispose();
        foreach (SafeFileHandle fd in _eventFds)
            fd.Dispose();
    }

    /// <summary>Whether <paramref name="fd"/> becomes readable within <paramref name="milliseconds"/>.</summary>
    public static bool WaitReadable(SafeHandle fd, int milliseconds) => TestNative.WaitReadable(fd, milliseconds);
}

/// <summary>The guest side of one started queue: its driver and the two eventfds.</summary>
internal sealed record QueueEnd(int Index, FakeDriver Driver, SafeFileHandle Kick, SafeFileHandle Call)
{
    /// <summary>Kicks and waits for the call; then drains it.</summary>
    public bool KickAndWaitForCall(int milliseconds = 5000)
    {
        TestNative.WriteU64(Kick, 1);
        return WaitForCall(milliseconds);
    }

    public bool WaitForCall(int milliseconds = 5000)
    {
        if (!BackendHarness.WaitReadable(Call, milliseconds))
            return false;
        TestNative.ReadU64(Call);
        return true;
    }
}
