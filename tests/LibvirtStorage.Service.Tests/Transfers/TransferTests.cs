using System.IO.Pipes;
using LibvirtStorage.Service.Tests.Infrastructure;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace LibvirtStorage.Service.Tests.Transfers;

public sealed class TransferTests
{
    private const long MiB = 1 << 20;

    /// <summary>A sparse 4 MiB file with data at 0 (64 KiB), at 2 MiB (64 KiB) and a zero-filled but allocated 1 MiB at 3 MiB.</summary>
    private static string MakeSource(ServiceHarness h)
    {
        string path = Path.Combine(h.Root, "source.img");
        using (FileStream stream = System.IO.File.Create(path))
        {
            stream.SetLength(4 * MiB);
            stream.Write(Fill(0xa1, 64 * 1024));
            stream.Position = 2 * MiB;
            stream.Write(Fill(0xb2, 64 * 1024));
            stream.Position = 3 * MiB;
            stream.Write(new byte[MiB]);
        }

        return path;
    }

    private static byte[] Fill(byte value, int length) => Enumerable.Repeat(value, length).ToArray();

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public async Task Upload_then_download_round_trips_and_stays_sparse(string format)
    {
        using var h = new ServiceHarness();
        string source = MakeSource(h);
        h.Service.CreateVolume("p", new VolumeSpec("disk", format, 4 * MiB));

        var reports = new List<OperationProgress>();
        var progress = new SynchronousProgress(reports.Add);
        TransferResult up;
        using (SafeFileHandle input = System.IO.File.OpenHandle(source))
        {
            up = await h.Service.UploadAsync("p", "disk", input, progress: progress);
        }

        Assert.Equal(4 * MiB, up.Length);
        Assert.Equal(128 * 1024, up.DataBytes);
        Assert.Equal(1.0, reports[^1].Fraction);
        Assert.All(reports, r => Assert.Equal("upload", r.Operation));
        Assert.Contains("Images are identical", Tool.QemuImg(h.Root, "compare", "-f", "raw", "-F", format, source, h.File("disk")), StringComparison.Ordinal);
        Assert.True(h.Service.GetVolume("p", "disk").Allocation < MiB, "zero chunks are not written as data");

        string output = Path.Combine(h.Root, "download.img");
        System.IO.File.WriteAllBytes(output, Fill(0xff, (int)(5 * MiB))); // stale content must not survive
        TransferResult down;
        using (SafeFileHandle target = System.IO.File.OpenHandle(output, FileMode.Open, FileAccess.ReadWrite))
        {
            down = await h.Service.DownloadAsync("p", "disk", target);
        }

        Assert.Equal(128 * 1024, down.DataBytes);
        Assert.Equal(4 * MiB - 128 * 1024, down.SkippedZeroBytes);
        Assert.Equal(System.IO.File.ReadAllBytes(source), System.IO.File.ReadAllBytes(output));
        Assert.True(Tool.AllocatedBytes(output) <= 256 * 1024, $"download allocated {Tool.AllocatedBytes(output)} bytes");
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public async Task Upload_from_a_sparse_file_turns_its_holes_into_unallocated_zeroes_without_reading_them(string format)
    {
        // What the libvirt module's vol-upload --sparse hands lvstord: a temporary file whose holes are the client's holes.
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", format, 64 * MiB));
        Tool.QemuIo(h.File("disk"), format, "write -P 0x5a 0 64M"); // old data everywhere: the holes must replace it
        string source = Path.Combine(h.Root, "holes.img");
        using (FileStream stream = System.IO.File.Create(source))
        {
            stream.Write(Fill(0xc3, (int)MiB));
            stream.Position = 40 * MiB;
            stream.Write(Fill(0xd4, (int)MiB));
            stream.SetLength(48 * MiB); // a trailing hole, then the file ends before the volume does
        }

        Assert.True(Tool.AllocatedBytes(source) <= 3 * MiB, $"the source should be sparse, allocated {Tool.AllocatedBytes(source)}");
        TransferResult up;
        using (SafeFileHandle input = System.IO.File.OpenHandle(source))
        {
            up = await h.Service.UploadAsync("p", "disk", input);
        }

        Assert.Equal(48 * MiB, up.Length);
        Assert.Equal(2 * MiB, up.DataBytes); // the holes were skipped, not read and compared
        Assert.Equal(46 * MiB, up.SkippedZeroBytes);

        string back = Path.Combine(h.Root, "back.raw");
        Tool.QemuImg(h.PoolPath("p"), "convert", "-O", "raw", "disk", back);
        byte[] expected = new byte[64 * MiB];
        System.IO.File.ReadAllBytes(source).CopyTo(expected, 0);
        Fill(0x5a, (int)(16 * MiB)).CopyTo(expected, 48 * MiB); // past the end of the file the volume keeps its data
        Assert.True(expected.AsSpan().SequenceEqual(System.IO.File.ReadAllBytes(back)), "volume content differs from the sparse source");
        long allocation = h.Service.GetVolume("p", "disk").Allocation;
        Assert.True(allocation < 24 * MiB, $"the holes should be unallocated in the volume, allocation {allocation}");
    }

    [Fact]
    public async Task A_staged_upload_claims_the_volume_at_once_and_reads_its_file_only_when_ready()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", 4 * MiB));
        string staged = Path.Combine(h.Root, "staged.img");
        using SafeFileHandle file = System.IO.File.OpenHandle(staged, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        using var readyEnd = new SafeFileHandle(pipe.ClientSafePipeHandle.DangerousGetHandle(), ownsHandle: false);

        Task<TransferResult> upload = h.Service.UploadAsync("p", "disk", file, ready: readyEnd);
        await Expect.ErrorAsync(StorageErrorKind.Busy, () => h.Service.UploadAsync("p", "disk", file)); // claimed before the data is there

        // The writer fills the file (data, then a hole) and only then says it is ready.
        RandomAccess.Write(file, Fill(0xab, (int)MiB), 0);
        RandomAccess.SetLength(file, 2 * MiB);
        Assert.False(upload.IsCompleted);
        pipe.WriteByte(1);
        pipe.Flush();
        TransferResult result = await upload.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(2 * MiB, result.Length);
        Assert.Equal(MiB, result.DataBytes);
        string back = Path.Combine(h.Root, "back.raw");
        Tool.QemuImg(h.PoolPath("p"), "convert", "-O", "raw", "disk", back);
        byte[] expected = new byte[4 * MiB];
        Fill(0xab, (int)MiB).CopyTo(expected, 0);
        Assert.Equal(expected, System.IO.File.ReadAllBytes(back));
    }

    [Fact]
    public async Task A_staged_upload_whose_writer_gives_up_is_cancelled_and_writes_nothing()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "raw", 4 * MiB));
        string staged = Path.Combine(h.Root, "staged.img");
        System.IO.File.WriteAllBytes(staged, Fill(0xab, (int)MiB));
        using SafeFileHandle file = System.IO.File.OpenHandle(staged);
        using var pipe = new AnonymousPipeServerStream(PipeDirection.Out);
        using var readyEnd = new SafeFileHandle(pipe.ClientSafePipeHandle.DangerousGetHandle(), ownsHandle: false);

        Task<TransferResult> upload = h.Service.UploadAsync("p", "disk", file, ready: readyEnd);
        pipe.SafePipeHandle.Dispose(); // the writer's end closes without the byte; the read end stays open

        var ex = await Expect.ErrorAsync(StorageErrorKind.Cancelled, () => upload.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("given up by its writer", ex.Message, StringComparison.Ordinal);
        Assert.True(System.IO.File.ReadAllBytes(h.File("disk")).All(b => b == 0), "a given-up staged upload must not write");
        await h.Service.UploadAsync("p", "disk", file); // and the volume is free again
    }

    [Fact]
    public async Task Download_resolves_the_whole_chain_and_a_range()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", 2 * MiB));
        Tool.QemuIo(h.File("base"), "raw", "write -P 0x11 0 1M");
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        Tool.QemuIo(h.File("vm1"), "qcow2", "write -P 0x22 512k 64k", "write -z 768k 64k");

        string expected = Path.Combine(h.Root, "expected.raw");
        Tool.QemuImg(h.PoolPath("p"), "convert", "-O", "raw", "vm1", expected);
        string output = Path.Combine(h.Root, "out.raw");
        using (SafeFileHandle target = System.IO.File.OpenHandle(output, FileMode.Create, FileAccess.ReadWrite))
        {
            await h.Service.DownloadAsync("p", "vm1", target);
        }

        Assert.Equal(System.IO.File.ReadAllBytes(expected), System.IO.File.ReadAllBytes(output));

        using (SafeFileHandle target = System.IO.File.OpenHandle(output, FileMode.Create, FileAccess.ReadWrite))
        {
            TransferResult part = await h.Service.DownloadAsync("p", "vm1", target, offset: 512 * 1024, length: 128 * 1024);
            Assert.Equal(128 * 1024, part.Length);
        }

        Assert.Equal(System.IO.File.ReadAllBytes(expected).AsSpan(512 * 1024, 128 * 1024).ToArray(), System.IO.File.ReadAllBytes(output));
    }

    [Fact]
    public async Task Transfers_work_through_pipes()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("disk", "qcow2", MiB));
        byte[] data = Enumerable.Range(0, (int)MiB).Select(i => (byte)(i * 7)).ToArray();

        using (var pipe = new AnonymousPipeServerStream(PipeDirection.Out))
        using (var readEnd = new SafeFileHandle(pipe.ClientSafePipeHandle.DangerousGetHandle(), ownsHandle: false))
        {
            Task<TransferResult> upload = h.Service.UploadAsync("p", "disk", readEnd);
            Task write = Task.Run(() =>
            {
                pipe.Write(data);
                pipe.Close();
            });
            Assert.Equal(MiB, (await upload.WaitAsync(TimeSpan.FromSeconds(30))).Length);
            await write.WaitAsync(TimeSpan.FromSeconds(30));
        }

        using (var pipe = new AnonymousPipeServerStream(PipeDirection.In))
        using (var writeEnd = new SafeFileHandle(pipe.ClientSafePipeHandle.DangerousGetHandle(), ownsHandle: false))
        {
            var received = new MemoryStream();
            Task copy = pipe.CopyToAsync(received);
            TransferResult result = await h.Service.DownloadAsync("p", "disk", writeEnd).WaitAsync(TimeSpan.FromSeconds(30));
            pipe.DisposeLocalCopyOfClientHandle();
            await copy.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(MiB, result.Length);
            Assert.Equal(data, received.ToArray());
        }
    }

    [Fact]
    public async Task Wipe_zeroes_the_volume()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB));
        Tool.QemuIo(h.File("base"), "raw", "write -P 0x11 0 1M");
        h.Service.CreateVolume("p", new VolumeSpec("q", "qcow2", 2 * MiB));
        Tool.QemuIo(h.File("q"), "qcow2", "write -P 0x22 0 2M");

        await h.Service.WipeAsync("p", "q");
        Tool.QemuIo(h.File("q"), "qcow2", "read -P 0 0 2M");
        Assert.Contains("No errors were found", Tool.QemuImg(h.PoolPath("p"), "check", "q"), StringComparison.Ordinal);

        // An overlay over data must read zeroes too, not its backing volume's data.
        h.Service.DeleteVolume("p", "q");
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        await h.Service.WipeAsync("p", "vm1");
        Tool.QemuIo(h.File("vm1"), "qcow2", "read -P 0 0 1M");
        Tool.QemuIo(h.File("base"), "raw", "read -P 0x11 0 1M");
    }

    [Fact]
    public async Task Bad_transfers_are_typed_and_change_nothing()
    {
        using var h = new ServiceHarness();
        h.Service.CreateVolume("p", new VolumeSpec("base", "raw", MiB));
        h.Service.CreateVolume("p", new VolumeSpec("vm1", "qcow2", null, "base"));
        string source = MakeSource(h);
        using SafeFileHandle input = System.IO.File.OpenHandle(source);
        string before = h.Fingerprint();
        var ex = await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.UploadAsync("p", "base", input));
        Assert.Contains("'vm1'", ex.Message, StringComparison.Ordinal);
        await Expect.ErrorAsync(StorageErrorKind.InUse, () => h.Service.WipeAsync("p", "base"));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.UploadAsync("p", "vm1", input, offset: 2 * MiB));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.UploadAsync("p", "vm1", input, offset: 512 * 1024, length: MiB));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.UploadAsync("p", "vm1", input, offset: -1));
        await Expect.ErrorAsync(StorageErrorKind.Invalid, () => h.Service.DownloadAsync("p", "vm1", input, length: -5));
        await Expect.ErrorAsync(StorageErrorKind.NotFound, () => h.Service.DownloadAsync("p", "nope", input));
        Assert.Equal(before, h.Fingerprint());
    }

    /// <summary>Reports on the calling thread (unlike <see cref="Progress{T}"/>, which posts to the thread pool).</summary>
    internal sealed class SynchronousProgress(Action<OperationProgress> report) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value) => report(value);
    }
}
