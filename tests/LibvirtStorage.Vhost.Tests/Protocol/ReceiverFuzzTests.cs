using System.Runtime.InteropServices;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using LibvirtStorage.Vhost.Protocol;
using Xunit;

namespace LibvirtStorage.Vhost.Tests.Protocol;

/// <summary>
/// Random byte streams fed to the receiver: it may refuse or break, but throws nothing except
/// <see cref="VhostUserProtocolException"/>, ends (never hangs) at end of stream, and allocates no more than
/// a bounded amount whatever size fields it reads. Runs alone: allocation counts are per thread, and the
/// hostile tests' fd counts must not see these sockets.
/// </summary>
[Collection(nameof(FdCountCollection))]
public class ReceiverFuzzTests
{
    // Exceptions and their messages are the only allocations on the receive path; a 4 GiB size field must not be one.
    private const long AllocationBound = 64 * 1024;

    /// <summary>Feeds the stream, closes the writer, receives until the connection breaks; returns what it ended with.</summary>
    private static (int Messages, VhostUserProtocolError Error, long Allocated) Drain(byte[] stream)
    {
        var (peer, b) = UnixSocket.CreatePair();
        using var backend = new VhostUserConnection(b);
        var writer = Task.Run(() =>
        {
            using (peer)
            {
                TestNative.WriteAll(peer, stream);
                TestNative.ShutdownWrite(peer);
            }
        });
        int messages = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            while (messages < 10_000)
            {
                _ = backend.Receive().Refusal;
                messages++;
            }
            throw new InvalidOperationException("the receiver did not stop at end of stream");
        }
        catch (VhostUserProtocolException ex)
        {
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(writer.Wait(TimeSpan.FromSeconds(30)), "writer stuck: the receiver stopped reading early");
            return (messages, ex.Error, allocated);
        }
    }

    [Property(MaxTest = 300)]
    public bool Random_bytes_only_ever_raise_the_protocol_exception(byte[] stream)
    {
        var (_, error, allocated) = Drain(stream ?? []);
        return Enum.IsDefined(error) && allocated < AllocationBound;
    }

    /// <summary>Streams of plausible headers (real request numbers, version 1 mostly, sizes near the limits) and random payloads.</summary>
    private static Gen<byte[]> HeaderishStreams()
    {
        var header =
            from request in Gen.Frequency((4, Gen.Choose(0, 45)), (1, ArbMap.Default.GeneratorFor<int>()))
            from flags in Gen.Frequency((6, Gen.Constant(1)), (1, Gen.Constant(9)), (1, Gen.Choose(0, 15)))
            from size in Gen.Frequency((6, Gen.Choose(0, 64)), (1, Gen.Choose(4000, 4200)), (1, ArbMap.Default.GeneratorFor<int>()))
            from payloadLength in Gen.Frequency((5, Gen.Constant(-1)), (1, Gen.Choose(0, 80)))
            from seed in ArbMap.Default.GeneratorFor<int>()
            select Message((uint)request, (uint)flags, (uint)size, payloadLength, seed);
        return Gen.ListOf(header).Select(parts => parts.SelectMany(p => p).ToArray());
    }

    private static byte[] Message(uint request, uint flags, uint size, int payloadLength, int seed)
    {
        // payloadLength -1: as many payload bytes as the header promises (when that is small), else a lie.
        int length = payloadLength >= 0 ? payloadLength : (int)Math.Min(size, 8192u);
        var bytes = new byte[VhostUserHeader.Size + length];
        MemoryMarshal.Write(bytes, new VhostUserHeader(request, (VhostUserHeaderFlags)flags, size));
        new Random(seed).NextBytes(bytes.AsSpan(VhostUserHeader.Size));
        return bytes;
    }

    [Fact]
    public void Plausible_header_streams_only_ever_raise_the_protocol_exception()
    {
        Prop.ForAll(HeaderishStreams().ToArbitrary(), stream =>
        {
            var (_, error, allocated) = Drain(stream);
            return Enum.IsDefined(error) && allocated < AllocationBound;
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Well_formed_messages_followed_by_garbage_are_all_received_first()
    {
        var good = Message((uint)FrontendRequest.SetFeatures, 1, 8, -1, 1);
        var stream = good.Concat(good).Concat(good).Concat(new byte[] { 1, 2, 3 }).ToArray();
        var (messages, error, _) = Drain(stream);
        Assert.Equal(3, messages);
        Assert.Equal(VhostUserProtocolError.Truncated, error);
    }

    [Fact]
    public void Many_refused_messages_allocate_nothing_per_message()
    {
        var refused = Message(99, 1, 16, -1, 2);
        var stream = Enumerable.Repeat(refused, 500).SelectMany(m => m).ToArray();
        var (messages, error, allocated) = Drain(stream);
        Assert.Equal(500, messages);
        Assert.Equal(VhostUserProtocolError.PeerClosed, error);
        Assert.True(allocated < AllocationBound, $"{allocated} bytes for 500 messages");
    }

    [Property(MaxTest = 100)]
    public bool Random_messages_with_random_fds_leak_no_fd(byte request, byte flags, ushort size, byte fdCount, bool takeFirst)
    {
        // The fds sent all refer to one fresh file, so the count sees only copies of them.
        string marker = Path.GetTempFileName();
        using var markerFd = File.OpenHandle(marker);
        int before = TestNative.OpenFdsOn(marker);
        var (peer, b) = UnixSocket.CreatePair();
        using (var backend = new VhostUserConnection(b))
        using (peer)
        {
            uint payload = (uint)(size % 300);
            var bytes = new byte[VhostUserHeader.Size + payload];
            MemoryMarshal.Write(bytes, new VhostUserHeader((uint)(request % 48), (VhostUserHeaderFlags)(flags % 16), payload));
            var fds = Enumerable.Repeat((int)markerFd.DangerousGetHandle(), fdCount % 40).ToArray();
            TestNative.SendWithFds(peer, bytes, fds);
            TestNative.SendWithFds(peer, bytes, fds); // a second one: the first one's untaken fds must be closed
            TestNative.ShutdownWrite(peer);
            try
            {
                for (int i = 0; i < 3; i++)
                    TakeSome(backend, takeFirst);
            }
            catch (VhostUserProtocolException)
            {
                // Broken: fine, as long as nothing leaks.
            }
        }
        int after = TestNative.OpenFdsOn(marker);
        markerFd.Dispose();
        File.Delete(marker);
        return after == before;
    }

    private static void TakeSome(VhostUserConnection backend, bool takeFirst)
    {
        var message = backend.Receive();
        if (takeFirst && message.Fds.Count > 0)
            message.Fds.Take(0).Dispose();
    }
}
