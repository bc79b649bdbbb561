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
            // qemu-io opened the image (and took QEMU's locks) once it answers a read. Polling with qemu-img info
            // instead would race: an info that holds its shared lock while qemu-io starts makes qemu-io fail.
            await qemu.StandardInput.WriteLineAsync("read 0 512");
            await qemu.StandardInput.FlushAsync();
            Task<string?> answer = qemu.StandardOutput.ReadLineAsync();
            if (await Task.WhenAny(answer, Task.Delay(TimeSpan.FromSeconds(60))) != answer)
            {
                Assert.Fail("qemu-io did not answer a read within 60 s");
            }

            string? line = await answer;
            Assert.True(line?.Contains("read 512/512 bytes", StringComparison.Ordinal) == true,
                $"qemu-io could not open the image: '{line}' {(qemu.HasExited ? await qemu.StandardError.ReadToEndAsync() : "")}");
            Assert.NotEqual(0, Tool.Run("qemu-img", h.Root, "info", h.File("disk")).ExitCode);

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
