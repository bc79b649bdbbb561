using System.Diagnostics;
using LibvirtStorage.Vhost.Frontend;
using Xunit;

namespace LibvirtStorage.VhostBlk.Tests;

/// <summary>
/// <see cref="PatternWorkload"/>, the checker the demo and the crash tests rely on, must itself be able to fail:
/// it passes on an honest back-end, and reports a sector that someone else changed behind its back.
/// </summary>
public sealed class PatternWorkloadTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vhost-pattern-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Verify_passes_after_honest_writes_and_catches_a_sector_changed_behind_its_back()
    {
        string image = Path.Combine(_dir, "disk.qcow2"), socket = Path.Combine(_dir, "blk.sock");
        Tools.CreateQcow2(image, "16M");
        var workload = new PatternWorkload(offset: 1 << 20, length: 4 << 20);
        using (Process backend = Tools.StartBackend("--socket-path", socket, "--image", image, "--format", "qcow2"))
        {
            try
            {
                Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
                using var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Depth = 16, MaxRequestBytes = 4096 });
                VhostUserBlkQueue queue = frontend.Queues[0];
                workload.WriteAll(queue);
                workload.WriteRandom(queue, 2000);
                workload.Flush(queue);
                PatternCheck check = workload.Verify(queue);
                Assert.True(check.IsOk, check.FirstMismatch);
                Assert.Equal(4L << 20 >> 9, check.Sectors);
                Assert.Equal(1024 + 2000, workload.WritesAcknowledged);
            }
            finally
            {
                backend.Kill();
                backend.WaitForExit();
            }
        }

        // Overwrite the first block of the range with zeroes, as a lost write would look.
        Assert.Equal(0, Tools.Run("qemu-io", "-f", "qcow2", "-c", "write -z 1M 4k", image).Exit);
        File.Delete(socket);   // the killed back-end's socket file stays; wait for the new one
        using (Process backend = Tools.StartBackend("--socket-path", socket, "--image", image, "--format", "qcow2"))
        {
            try
            {
                Assert.True(SpinWait.SpinUntil(() => File.Exists(socket) || backend.HasExited, 30_000), "no socket");
                using var frontend = VhostUserBlkFrontend.Connect(socket, new VhostUserBlkFrontendOptions { Depth = 16, MaxRequestBytes = 4096 });
                PatternCheck check = workload.Verify(frontend.Queues[0]);
                Assert.False(check.IsOk);
                Assert.Equal(8, check.Mismatches);
                Assert.Contains("block 0 sector 0", check.FirstMismatch, StringComparison.Ordinal);
                // The same zeroes are not excused by crash tolerance either: the write was flushed.
                Assert.Equal(8, workload.Verify(frontend.Queues[0], afterCrash: true).Mismatches);
            }
            finally
            {
                backend.Kill();
                backend.WaitForExit();
            }
        }
    }
}
