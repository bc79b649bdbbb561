using System.Net.Sockets;
using LibvirtStorage.Vhost.Blk;
using LibvirtStorage.Vhost.Protocol;
using LibvirtStorage.Vhost.Tests.Backend;
using LibvirtStorage.Vhost.Tests.Blk;
using LibvirtStorage.Vhost.Tests.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Server;

/// <summary>
/// Issue 3's isolation rule: a hostile front-end on one export loses its own connection and nothing else. Two exports
/// run in one process (as in lvstord); the hostile one gets garbage, out-of-order and oversized messages and bad
/// rings, while a well-behaved guest keeps doing I/O on the other export, and the hostile export then serves a
/// well-behaved front-end again. Neither device is ever asked to touch anything outside its capacity.
/// </summary>
public sealed class HostileIsolationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-blk-isolation-").FullName;
    private readonly ListLogger _log = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_hostile_front_end_breaks_only_its_own_connection()
    {
        var victimDevice = new FakeBlockDevice(serial: "victim");
        var hostileDevice = new FakeBlockDevice(serial: "hostile");
        string victimPath = Path.Combine(_dir, "victim.sock"), hostilePath = Path.Combine(_dir, "hostile.sock");
        await using VhostUserBlkServer victim = VhostUserBlkServer.Listen(victimPath, victimDevice, new VhostUserBlkOptions(), _log);
        await using VhostUserBlkServer hostile = VhostUserBlkServer.Listen(hostilePath, hostileDevice, new VhostUserBlkOptions(), _log);
        victim.Start();
        hostile.Start();
        using BlkGuest good = BlkGuest.Connect(victimPath).Start();

        int round = 0;
        foreach (Action<string> attack in Attacks())
        {
            attack(hostilePath);
            // The victim's guest writes and reads back a fresh pattern after every attack.
            byte[] data = Enumerable.Range(0, 4096).Select(i => (byte)(i + round)).ToArray();
            Assert.Equal((byte)VirtioBlkStatus.Ok, good.Request(VirtioBlkRequestType.Out, (ulong)(8 * round), data).Status);
            Assert.Equal(data, good.Request(VirtioBlkRequestType.In, (ulong)(8 * round), inputLength: 4096).Input);
            round++;
        }

        // The victim's guest is still connected, the hostile export's accept loop still runs, and it serves a
        // well-behaved front-end.
        Assert.True(victim.IsServing);
        Assert.False(hostile.Completion.IsCompleted);
        using (BlkGuest after = BlkGuest.Connect(hostilePath).Start())
            Assert.Equal((byte)VirtioBlkStatus.Ok, after.Request(VirtioBlkRequestType.Out, 0, new byte[512]).Status);
        Assert.Equal(0, victimDevice.OutOfRangeCalls + hostileDevice.OutOfRangeCalls);
        Assert.Equal(1, victim.ConnectionCount);
        Assert.Equal(1, hostileDevice.Writes); // only the well-behaved write after the attacks
        Assert.Equal(Attacks().Count() + 1, hostile.ConnectionCount); // each attack was served, and each one ended
        foreach (string reason in new[]
        {
            "bad vhost-user header", "4294967295-byte payload", "kick fd arrived before any memory table",
            "SetMemTable: refused (FdCount)", "queue size 100 is not a power of two", "header cut short",
        })
        {
            Assert.Contains(reason, _log.Text, StringComparison.Ordinal); // each connection ended for its own reason
        }
    }

    /// <summary>Each attack opens its own connection to the hostile export and leaves when the back-end hangs up.</summary>
    private static IEnumerable<Action<string>> Attacks()
    {
        // Bytes that are not a vhost-user header at all (version bits wrong).
        yield return path => WithSocket(path, s => s.Send(Enumerable.Repeat((byte)0xa5, 64).ToArray()));
        // A size field far beyond 4096: the payload is never read.
        yield return path => WithFrontend(path, f => f.SendRaw(new VhostUserHeader((uint)FrontendRequest.SetMemTable, VhostUserHeaderFlags.Version1, uint.MaxValue), []));
        // A kick fd before any memory table.
        yield return path => WithFrontend(path, f =>
        {
            using var kick = TestNative.EventFd();
            f.Send(FrontendRequest.SetVringKick, new VhostUserU64(0), [kick]);
        });
        // A memory table that promises an fd and sends none.
        yield return path => WithFrontend(path, f =>
            f.SetMemTable([new VhostUserMemoryRegion(0, 1 << 20, 0x7f00_0000_0000, 0)], []));
        // A queue size that is not a power of two, then one above 32768.
        yield return path => WithFrontend(path, f =>
        {
            f.Send(FrontendRequest.SetVringNum, new VhostUserVringState(0, 100));
            f.Send(FrontendRequest.SetVringNum, new VhostUserVringState(0, 65536));
        });
        // Half a header, then the front-end goes away.
        yield return path => WithSocket(path, s => s.Send(new byte[5]));
    }

    private static void WithSocket(string path, Action<Socket> attack)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(path));
        attack(socket);
        socket.Shutdown(SocketShutdown.Send);
        WaitForHangUp(socket);
    }

    private static void WithFrontend(string path, Action<VhostUserFrontendChannel> attack)
    {
        using BlkGuest guest = BlkGuest.Connect(path);
        try
        {
            attack(guest.Frontend);
        }
        catch (Exception e) when (e is VhostUserProtocolException or IOException or SocketException)
        {
            // The back-end may hang up before the attack is fully sent.
        }
    }

    /// <summary>Reads until the back-end closes its end (or 10 s pass), so the next attack finds the export free.</summary>
    private static void WaitForHangUp(Socket socket)
    {
        socket.ReceiveTimeout = 10_000;
        var sink = new byte[256];
        try
        {
            while (socket.Receive(sink) > 0)
            {
            }
        }
        catch (SocketException)
        {
        }
    }
}
