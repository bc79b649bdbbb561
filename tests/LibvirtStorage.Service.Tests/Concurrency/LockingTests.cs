using System.Diagnostics;
using LibvirtStorage.Service.Tests.Infrastructure;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Service.Tests.Concurrency;

public sealed class LockingTests
{
    [Fact]
    public async Task An_image_held_by_qemu_is_Busy_and_nothing_changes()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 1 << 20));
        h.Service.CreateVolume("p", new VolumeSpec("copy-source", "raw", 1 << 20));

        // qemu-io keeps the image open read-write (with QEMU's OFD locks) until its stdin closes.
        var info = new ProcessStartInfo("qemu-io", ["-f", "qcow2", h.File("disk")])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using Process qemu = Process.Start(info)!;
        try
        {
            // Wait until QEMU holds the lock: qemu-img info without -U then fails.
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (Tool.Run("qemu-img", h.Root, "info", h.File("disk")).ExitCode == 0)
            {
                Assert.True(DateTime.UtcNow < deadline, "qemu-io did not take its lock");
                await Task.Delay(100);
            }

            string before = h.Fingerprint();
            using SafeFileHandle input = System.IO.File.OpenHandle(h.File("copy-source"));
            var ex = await Expect.ErrorAsync(StorageErrorKind.Busy, () => h.Service.UploadAsync("p", "disk", input));
            Assert.Contains("another process", ex.Message, StringComparison.Ordinal);
            await Expect.ErrorAsync(StorageErrorKind.Busy, () => h.Service.WipeAsync("p", "disk"));
            Expect.Error(StorageErrorKind.Busy, () => h.Service.ResizeVolume("p", "disk", 2 << 20));
            Assert.Equal(1 << 20, h.Service.GetVolume("p", "disk").Capacity); // info reads without locks
            Assert.Equal(before, h.Fingerprint());
        }
        finally
        {
            qemu.StandardInput.Close();
            if (!qemu.WaitForExit(10_000))
            {
                qemu.Kill();
            }
        }

        h.Service.ResizeVolume("p", "disk", 2 << 20);
    }
}
