using System.Diagnostics;
using System.Globalization;
using System.Text;
using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>Skips (naming the binary) when qemu-storage-daemon is not installed; xunit 2 has no dynamic skip.</summary>
public sealed class QsdFactAttribute : FactAttribute
{
    public const string Binary = "/usr/bin/qemu-storage-daemon";

    public QsdFactAttribute()
    {
        if (!File.Exists(Binary))
            Skip = $"{Binary} is not installed (apt-get install qemu-system-common)";
    }
}

/// <summary>
/// <see cref="VhostUserBlkFrontend"/> against lvstor-vhost-blk and against qemu-storage-daemon on the same kind
/// of qcow2 image: patterns written at QD 8 on 2 queues, read back crosswise, FLUSH, GET_ID, WRITE_ZEROES and
/// DISCARD, then qemu-img check and qemu-io on the image. That QSD accepts the front-end is the evidence that it
/// speaks the protocol as QEMU does.
/// </summary>
public sealed class FrontendInteropTests : IDisposable
{
    private const int Chunk = 64 << 10, PerQueue = 16, Depth = 8;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-frontend-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Frontend_round_trip_against_lvstor_vhost_blk()
    {
        string image = Path.Combine(_dir, "disk.qcow2"), socket = Path.Combine(_dir, "blk.sock");
        Tools.CreateQcow2(image, "64M");
        using Process backend = Tools.StartBackend("--socket-path", socket, "--image", image, "--format", "qcow2", "--num-queues", "2", "--serial", "frontend-test");
        RoundTrip(backend, image, socket, expectedId: "frontend-test");
    }

    [QsdFact]
    public void Frontend_round_trip_against_qemu_storage_daemon()
    {
        string image = Path.Combine(_dir, "disk.qcow2"), socket = Path.Combine(_dir, "qsd.sock");
        Tools.CreateQcow2(image, "64M");
        using Process backend = Tools.Start(QsdFactAttribute.Binary,
            "--blockdev", $"driver=file,node-name=file0,filename={image}",
            "--blockdev", "driver=qcow2,node-name=disk0,file=file0",
            "--export", $"type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={socket},writable=on,num-queues=2");
        RoundTrip(backend, image, socket, expectedId: null);
    }

    [Fact]
    public void The_submit_and_reap_loop_allocates_nothing()
    {
        string image = Path.Combine(_dir, "disk.qcow2"), socket = Path.Combine(_dir, "blk.sock");
        Tools.CreateQcow2(image, "64M");
        using Process backend = Tools.StartBackend("--socket-path", socket, "--image", image, "--format", "qcow2");
        try
        {
            Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
            using var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Depth = Depth, MaxRequestBytes = 4096 });
            VhostUserBlkQueue queue = frontend.Queues[0];
            var done = new BlkCompletion[Depth];
            void Loop(int requests)
            {
                ulong sector = 0;
                int completed = 0;
                while (completed < requests)
                {
                    while (queue.TryAcquireSlot(out int slot))
                        queue.Submit(slot, (sector & 8) == 0 ? BlkRequestType.Write : BlkRequestType.Read, sector += 8, 4096);
                    completed += queue.WaitForCompletions(done);
                }

                while (queue.InFlight > 0)
                    queue.WaitForCompletions(done);
            }

            Loop(200);  // warm up: JIT, tiering
            long before = GC.GetAllocatedBytesForCurrentThread();
            Loop(2000);
            Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        finally
        {
            backend.Kill();
            backend.WaitForExit();
        }
    }

    private static void RoundTrip(Process backend, string image, string socket, string? expectedId)
    {
        Task<string> log = backend.StandardError.ReadToEndAsync();
        Task<string> stdout = backend.StandardOutput.ReadToEndAsync();
        try
        {
            Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
            Assert.False(backend.HasExited, "the back-end exited before listening");
            using (var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Queues = 2, QueueSize = 64, Depth = Depth, MaxRequestBytes = Chunk }))
            {
                Assert.Equal(64L << 20, frontend.Device.CapacityBytes);
                Assert.True(frontend.Device.NumQueues >= 2);
                Assert.True(frontend.Queues[0].EventIdx, "EVENT_IDX negotiated");
                Exercise(frontend, expectedId);
            }

            Assert.Equal(0, Tools.Run("kill", "-TERM", backend.Id.ToString(CultureInfo.InvariantCulture)).Exit);
            Assert.True(backend.WaitForExit(30_000), "the back-end did not stop on SIGTERM");
        }
        finally
        {
            if (!backend.HasExited)
                backend.Kill();
        }

        _ = log.Result + stdout.Result;
        var (exit, checkOut, checkErr) = Tools.Run("qemu-img", "check", image);
        Assert.True(exit == 0, checkOut + checkErr);
        // Chunk 0 of queue 0 was zeroed; the rest hold their pattern (chunk 1 was discarded, so skip it).
        Assert.True(Tools.QemuIoPatternMatches(image, 0, 0, Chunk));
        for (int q = 0; q < 2; q++)
        {
            for (int i = 2; i < PerQueue; i += 5)
                Assert.True(Tools.QemuIoPatternMatches(image, Pattern(q, i), Offset(q, i), Chunk), $"queue {q} chunk {i}");
        }
    }

    private static void Exercise(VhostUserBlkFrontend frontend, string? expectedId)
    {
        Span<BlkCompletion> done = stackalloc BlkCompletion[Depth];
        // Writes on both queues at QD 8, interleaved so both queues have requests in flight together.
        RunAll(frontend, done, write: true);
        // Read back crosswise: queue 1 reads what queue 0 wrote and the other way round.
        RunAll(frontend, done, write: false);

        VhostUserBlkQueue queue = frontend.Queues[0];
        Assert.True(queue.TryAcquireSlot(out int slot));
        queue.Submit(slot, BlkRequestType.Flush, 0, 0);
        Assert.True(Single(queue, done).IsOk);

        Assert.True(queue.TryAcquireSlot(out slot));
        queue.Submit(slot, BlkRequestType.GetId, 0, 20);
        BlkCompletion id = Single(queue, done);
        Assert.True(id.IsOk, $"GET_ID {id}");
        string serial = Encoding.ASCII.GetString(queue.Data(slot)[..20]).TrimEnd('\0');
        Assert.NotEmpty(serial);
        if (expectedId is not null)
            Assert.Equal(expectedId, serial);

        Assert.True(queue.TryAcquireSlot(out slot));
        queue.WriteSegment(slot, (ulong)Offset(0, 0) / 512, Chunk / 512);
        queue.Submit(slot, BlkRequestType.WriteZeroes, 0, 16);
        Assert.True(Single(queue, done).IsOk);
        Assert.True(queue.TryAcquireSlot(out slot));
        queue.WriteSegment(slot, (ulong)Offset(0, 1) / 512, Chunk / 512);
        queue.Submit(slot, BlkRequestType.Discard, 0, 16);
        Assert.True(Single(queue, done).IsOk);

        Assert.True(queue.TryAcquireSlot(out slot));
        queue.Submit(slot, BlkRequestType.Read, (ulong)Offset(0, 0) / 512, Chunk);
        Assert.True(Single(queue, done).IsOk);
        Assert.True(queue.Data(slot)[..Chunk].IndexOfAnyExcept((byte)0) < 0, "write-zeroes left data behind");
        queue.TryAcquireSlot(out _);
    }

    private static void RunAll(VhostUserBlkFrontend frontend, Span<BlkCompletion> done, bool write)
    {
        int[] next = new int[2], completed = new int[2];
        int maxInFlight = 0;
        while (completed[0] < PerQueue || completed[1] < PerQueue)
        {
            for (int q = 0; q < 2; q++)
            {
                VhostUserBlkQueue queue = frontend.Queues[q];
                int source = write ? q : 1 - q;     // which queue's chunks this queue reads
                while (next[q] < PerQueue && queue.TryAcquireSlot(out int slot))
                {
                    int i = next[q]++;
                    if (write)
                        queue.Data(slot)[..Chunk].Fill(Pattern(source, i));
                    queue.Submit(slot, write ? BlkRequestType.Write : BlkRequestType.Read, (ulong)Offset(source, i) / 512, Chunk);
                }

                queue.Publish();
                maxInFlight = Math.Max(maxInFlight, queue.InFlight);
            }

            for (int q = 0; q < 2; q++)
            {
                VhostUserBlkQueue queue = frontend.Queues[q];
                if (queue.InFlight == 0)
                    continue;
                int n = queue.WaitForCompletions(done);
                for (int k = 0; k < n; k++)
                {
                    Assert.True(done[k].IsOk, $"queue {q}: {done[k]}");
                    if (!write)
                    {
                        // The slot keeps the data until it is acquired again, so look at it now.
                        Span<byte> data = queue.Data(done[k].Slot)[..Chunk];
                        byte first = data[0];
                        Assert.True(data.IndexOfAnyExcept(first) < 0, "torn read");
                        Assert.Contains(first, ExpectedPatterns(1 - q));
                    }
                }

                completed[q] += n;
            }
        }

        Assert.Equal(Depth, maxInFlight);
    }

    private static BlkCompletion Single(VhostUserBlkQueue queue, Span<BlkCompletion> done)
    {
        Assert.Equal(1, queue.WaitForCompletions(done));
        return done[0];
    }

    private static byte[] ExpectedPatterns(int q)
    {
        var all = new byte[PerQueue];
        for (int i = 0; i < PerQueue; i++)
            all[i] = Pattern(q, i);
        return all;
    }

    private static byte Pattern(int q, int i) => (byte)(0x21 + (q * PerQueue) + i);

    private static long Offset(int q, int i) => ((long)q * PerQueue + i) * Chunk + (4L << 20);
}
