using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>
/// Data integrity with several requests of each queue inside the real engine at once: lvstor-vhost-blk with
/// <c>--parallel-requests 8</c>, QD32 on 2 queues through <see cref="VhostUserBlkFrontend"/>, 4 KiB writes in
/// shuffled order (the two queues interleave inside the same clusters, so a fresh qcow2 allocates concurrently),
/// read back crosswise through the back-end, then checked again from the file itself after the back-end exits.
/// </summary>
public sealed class ParallelRequestsTests : IDisposable
{
    private const int Block = 4096, BlocksPerQueue = 512, Depth = 32;
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-parallel-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("raw", false)]
    [InlineData("qcow2", false)]
    [InlineData("qcow2", true)]
    [InlineData("raw", true)]
    public async Task Parallel_requests_on_two_queues_keep_every_block(string format, bool writethrough)
    {
        string image = Path.Combine(_dir, "disk." + format), socket = Path.Combine(_dir, "blk.sock");
        if (format == "qcow2")
            Tools.CreateQcow2(image, "32M");
        else
            Assert.Equal(0, Tools.Run("qemu-img", "create", "-f", "raw", image, "32M").Exit);
        string[] args = ["--socket-path", socket, "--image", image, "--format", format, "--num-queues", "2", "--parallel-requests", "8"];
        using Process backend = Tools.StartBackend(writethrough ? [.. args, "--writethrough"] : args);
        Task<string> log = backend.StandardError.ReadToEndAsync();
        Task<string> stdout = backend.StandardOutput.ReadToEndAsync();
        try
        {
            Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
            Assert.False(backend.HasExited, "the back-end exited before listening");
            using (var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Queues = 2, QueueSize = 128, Depth = Depth, MaxRequestBytes = Block }))
            {
                Run(frontend, write: true);
                Run(frontend, write: false);
            }

            Assert.Equal(0, Tools.Run("kill", "-TERM", backend.Id.ToString(CultureInfo.InvariantCulture)).Exit);
            Assert.True(backend.WaitForExit(30_000), "the back-end did not stop on SIGTERM");
        }
        finally
        {
            if (!backend.HasExited)
                backend.Kill();
        }

        string output = await log + await stdout;
        Assert.Contains("8 request(s) at once per queue", output, StringComparison.Ordinal);
        string raw = image;
        if (format == "qcow2")
        {
            var (exit, checkOut, checkErr) = Tools.Run("qemu-img", "check", image);
            Assert.True(exit == 0, checkOut + checkErr);
            raw = Path.Combine(_dir, "converted.raw");
            Assert.Equal(0, Tools.Run("qemu-img", "convert", "-O", "raw", image, raw).Exit);
        }

        byte[] file = File.ReadAllBytes(raw);
        for (int block = 0; block < 2 * BlocksPerQueue; block++)
            Assert.True(Matches(file.AsSpan(block * Block, Block), block), $"block {block} in the file");
    }

    /// <summary>Queue q owns the blocks b with b % 2 == q and writes them in a shuffled order; reads go crosswise.</summary>
    private static void Run(VhostUserBlkFrontend frontend, bool write)
    {
        var order = new int[2][];
        var slotBlock = new int[2][];
        for (int q = 0; q < 2; q++)
        {
            int owner = write ? q : 1 - q;
            order[q] = Enumerable.Range(0, BlocksPerQueue).Select(i => (2 * i) + owner).ToArray();
            new Random(17 + q + (write ? 0 : 2)).Shuffle(order[q]);
            slotBlock[q] = new int[Depth];
        }

        int[] next = new int[2], completed = new int[2];
        int maxInFlight = 0;
        var done = new BlkCompletion[Depth];
        while (completed[0] < BlocksPerQueue || completed[1] < BlocksPerQueue)
        {
            for (int q = 0; q < 2; q++)
            {
                VhostUserBlkQueue queue = frontend.Queues[q];
                while (next[q] < BlocksPerQueue && queue.TryAcquireSlot(out int slot))
                {
                    int block = order[q][next[q]++];
                    slotBlock[q][slot] = block;
                    if (write)
                        Fill(queue.Data(slot)[..Block], block);
                    queue.Submit(slot, write ? BlkRequestType.Write : BlkRequestType.Read, (ulong)block * Block / 512, Block);
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
                        int block = slotBlock[q][done[k].Slot];
                        Assert.True(Matches(queue.Data(done[k].Slot)[..Block], block), $"block {block} read on queue {q}");
                    }
                }

                completed[q] += n;
            }
        }

        Assert.Equal(Depth, maxInFlight);
    }

    /// <summary>Every 8 bytes of a block carry its index and the word's position: a misplaced or torn block shows.</summary>
    private static void Fill(Span<byte> data, int block)
    {
        for (int word = 0; word < Block / 8; word++)
            BinaryPrimitives.WriteUInt64LittleEndian(data[(word * 8)..], ((ulong)(block + 1) << 32) | (uint)word);
    }

    private static bool Matches(ReadOnlySpan<byte> data, int block)
    {
        for (int word = 0; word < Block / 8; word++)
        {
            if (BinaryPrimitives.ReadUInt64LittleEndian(data[(word * 8)..]) != (((ulong)(block + 1) << 32) | (uint)word))
                return false;
        }

        return true;
    }
}
