using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.Service.Tests.Exports;

/// <summary>Pattern I/O through one queue of the C# front-end, with every completion checked.</summary>
public static class GuestIo
{
    /// <summary>Writes <paramref name="chunks"/> (offset, fill byte) of <paramref name="length"/> bytes, keeping the queue full.</summary>
    public static void Write(VhostUserBlkQueue queue, IReadOnlyList<(long Offset, byte Pattern)> chunks, int length) =>
        Run(queue, chunks, length, write: true);

    /// <summary>Reads the chunks back and asserts each holds its fill byte.</summary>
    public static void Verify(VhostUserBlkQueue queue, IReadOnlyList<(long Offset, byte Pattern)> chunks, int length) =>
        Run(queue, chunks, length, write: false);

    /// <summary>FLUSH, checked.</summary>
    public static void Flush(VhostUserBlkQueue queue)
    {
        Span<BlkCompletion> done = stackalloc BlkCompletion[queue.Depth];
        Assert.True(queue.TryAcquireSlot(out int slot));
        queue.Submit(slot, BlkRequestType.Flush, 0, 0);
        int n = 0;
        while (n == 0)
        {
            n = queue.WaitForCompletions(done);
        }

        Assert.True(done[0].IsOk, $"flush: {done[0]}");
    }

    private static void Run(VhostUserBlkQueue queue, IReadOnlyList<(long Offset, byte Pattern)> chunks, int length, bool write)
    {
        var bySlot = new (long Offset, byte Pattern)[queue.Depth];
        var done = new BlkCompletion[queue.Depth];
        int next = 0, completed = 0;
        while (completed < chunks.Count)
        {
            while (next < chunks.Count && queue.TryAcquireSlot(out int slot))
            {
                (long offset, byte pattern) = chunks[next++];
                bySlot[slot] = (offset, pattern);
                if (write)
                {
                    queue.Data(slot)[..length].Fill(pattern);
                }
                else
                {
                    queue.Data(slot)[..length].Fill(0xee);
                }

                queue.Submit(slot, write ? BlkRequestType.Write : BlkRequestType.Read, (ulong)(offset / 512), length);
            }

            int n = queue.WaitForCompletions(done);
            for (int i = 0; i < n; i++)
            {
                BlkCompletion c = done[i];
                (long offset, byte pattern) = bySlot[c.Slot];
                Assert.True(c.IsOk, $"{(write ? "write" : "read")} at {offset}: {c}");
                if (!write)
                {
                    Span<byte> data = queue.Data(c.Slot)[..length];
                    int bad = data.IndexOfAnyExcept(pattern);
                    Assert.True(bad < 0, $"read at {offset}: byte {bad} is 0x{(bad < 0 ? 0 : data[bad]):x2}, expected 0x{pattern:x2}");
                }
            }

            completed += n;
        }
    }
}
