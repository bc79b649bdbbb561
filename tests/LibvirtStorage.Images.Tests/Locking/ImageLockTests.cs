using System.Globalization;
using LibvirtStorage.Images.Locking;
using LibvirtStorage.Images.Native;
using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;

namespace LibvirtStorage.Images.Tests.Locking;

public sealed class ImageLockTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Writer_TakesQemusBytes_HeldAndUnshared()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        using (ImageLock.Acquire(file, writable: true))
        {
            Assert.Equal(new[] { 100, 101, 103, 201, 203 }, LockedBytes(image));
        }

        Assert.Empty(LockedBytes(image));
    }

    [Fact]
    public void Reader_TakesConsistentReadAndRefusesWriteAndResize()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: false, direct: false);
        using ImageLock imageLock = ImageLock.Acquire(file, writable: false);
        Assert.Equal(new[] { 100, 201, 203 }, LockedBytes(image));
        Assert.Equal(BlockPermissions.ConsistentRead, imageLock.Held);
    }

    [Fact]
    public void EngineWriter_QemuIoReadWriteAndReadOnly_AreRefused()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        using ImageLock imageLock = ImageLock.Acquire(file, writable: true);

        ToolResult rw = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "read 0 512", image]);
        Assert.NotEqual(0, rw.ExitCode);
        Assert.Contains("Failed to get \"write\" lock", rw.AllOutput, StringComparison.Ordinal);

        ToolResult ro = QemuTools.Run("qemu-io", ["-r", "-f", "qcow2", "-c", "read 0 512", image]);
        Assert.NotEqual(0, ro.ExitCode);
        Assert.Contains("Failed to get shared \"write\" lock", ro.AllOutput, StringComparison.Ordinal);
    }

    [Fact]
    public void EngineWriter_QemuImgInfo_FailsUnlessForceShare()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        using ImageLock imageLock = ImageLock.Acquire(file, writable: true);

        ToolResult info = QemuTools.Run("qemu-img", ["info", image]);
        Assert.NotEqual(0, info.ExitCode);
        Assert.Contains("Failed to get shared \"write\" lock", info.AllOutput, StringComparison.Ordinal);

        ToolResult shared = QemuTools.Run("qemu-img", ["info", "-U", image]);
        Assert.Equal(0, shared.ExitCode);
        Assert.Contains("file format: qcow2", shared.StandardOutput, StringComparison.Ordinal);
    }

    [Fact]
    public void EngineRawWriter_RefusesQemuWriter_ButQemuReadersMayRead()
    {
        // QEMU's own rule for raw: its tools share everything, so read-only tools still work while a
        // guest device (and lvstord, which applies the device's rule) holds the image for writing.
        string image = _dir.File("r.raw");
        ImageOpener.Create(image, new ImageCreateOptions { Format = ImageFormat.Raw, Size = 1 << 20 });
        using IBlockImage opened = ImageOpener.Open(image, new ImageOpenOptions { Format = ImageFormat.Raw });

        ToolResult rw = QemuTools.Run("qemu-io", ["-f", "raw", "-c", "write 0 512", image]);
        Assert.NotEqual(0, rw.ExitCode);
        Assert.Contains("Failed to get \"write\" lock", rw.AllOutput, StringComparison.Ordinal);

        ToolResult ro = QemuTools.Run("qemu-io", ["-r", "-f", "raw", "-c", "read 0 512", image]);
        Assert.Equal(0, ro.ExitCode);
    }

    [Fact]
    public void QemuWriter_EngineReadWriteAndReadOnly_AreRefusedNamingThePermission()
    {
        string image = CreateQcow2("a.qcow2");
        using BackgroundTool qemu = HoldWithQemuIo(image, readOnly: false);

        using ImageFile rwFile = ImageFile.Open(image, writable: true, direct: false);
        ImageException rw = Assert.Throws<ImageException>(() => ImageLock.Acquire(rwFile, writable: true));
        Assert.Equal(ErrorKind.Locked, rw.Kind);
        Assert.Contains("\"write\"", rw.Message, StringComparison.Ordinal);
        Assert.Contains(image, rw.Message, StringComparison.Ordinal);

        using ImageFile roFile = ImageFile.Open(image, writable: false, direct: false);
        ImageException ro = Assert.Throws<ImageException>(() => ImageLock.Acquire(roFile, writable: false));
        Assert.Equal(ErrorKind.Locked, ro.Kind);
        Assert.Contains("shared \"write\" lock", ro.Message, StringComparison.Ordinal);

        // A failed attempt leaves no bytes behind: only qemu-io's five remain.
        Assert.Equal(new[] { 100, 101, 103, 201, 203 }, LockedBytes(image));
    }

    [Fact]
    public void QemuRawWriter_EngineOpen_IsRefused()
    {
        string image = _dir.File("r.raw");
        ImageOpener.Create(image, new ImageCreateOptions { Format = ImageFormat.Raw, Size = 1 << 20 });
        using BackgroundTool qemu = HoldWithQemuIo(image, readOnly: false, format: "raw");

        ImageException e = Assert.Throws<ImageException>(() => ImageOpener.Open(image, new ImageOpenOptions { Format = ImageFormat.Raw }));
        Assert.Equal(ErrorKind.Locked, e.Kind);
        Assert.Contains("\"write\"", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void QemuReader_CoexistsWithEngineReader_ButRefusesEngineWriter()
    {
        string image = CreateQcow2("a.qcow2");
        using BackgroundTool qemu = HoldWithQemuIo(image, readOnly: true);

        using (ImageFile roFile = ImageFile.Open(image, writable: false, direct: false))
        using (ImageLock.Acquire(roFile, writable: false))
        {
        }

        using ImageFile rwFile = ImageFile.Open(image, writable: true, direct: false);
        ImageException e = Assert.Throws<ImageException>(() => ImageLock.Acquire(rwFile, writable: true));
        Assert.Equal(ErrorKind.Locked, e.Kind);
        Assert.Contains("Failed to get \"write\" lock", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TwoEngineReaders_Coexist_AndTwoWritersDoNot()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile a = ImageFile.Open(image, writable: false, direct: false);
        using ImageFile b = ImageFile.Open(image, writable: false, direct: false);
        using (ImageLock.Acquire(a, writable: false))
        using (ImageLock.Acquire(b, writable: false))
        {
            ToolResult qemuReader = QemuTools.Run("qemu-io", ["-r", "-f", "qcow2", "-c", "read 0 512", image]);
            Assert.Equal(0, qemuReader.ExitCode);
        }

        using ImageFile w1 = ImageFile.Open(image, writable: true, direct: false);
        using ImageFile w2 = ImageFile.Open(image, writable: true, direct: false);
        using ImageLock first = ImageLock.Acquire(w1, writable: true);
        ImageException e = Assert.Throws<ImageException>(() => ImageLock.Acquire(w2, writable: true));
        Assert.Equal(ErrorKind.Locked, e.Kind);
    }

    [Theory]
    [InlineData("qcow2")]
    [InlineData("raw")]
    public void QemuOverlay_OverEngineHeldBase_CanBeWritten(string baseFormat)
    {
        string baseImage = _dir.File("base." + baseFormat);
        QemuTools.RunChecked("qemu-img", "create", "-f", baseFormat, baseImage, "1M");
        string overlay = CreateOverlay("overlay.qcow2", baseImage, baseFormat);

        using ImageFile file = ImageFile.Open(baseImage, writable: false, direct: false);
        using ImageLock baseLock = ImageLock.Acquire(file, writable: false);

        ToolResult write = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "write -P 7 0 64k", overlay]);
        Assert.True(write.ExitCode == 0, write.AllOutput);
        Assert.DoesNotContain("Failed", write.AllOutput, StringComparison.Ordinal);

        // ...but QEMU may not commit into the base we hold.
        ToolResult commit = QemuTools.Run("qemu-img", ["commit", overlay]);
        Assert.NotEqual(0, commit.ExitCode);
        Assert.Contains("lock", commit.AllOutput, StringComparison.Ordinal);
    }

    [Fact]
    public void Change_UpgradesAReaderToAWriter_AndBack()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        using ImageLock imageLock = ImageLock.Acquire(file, writable: false);

        imageLock.Change(ImageLock.PermissionsFor(writable: true), ImageLock.EngineShared);
        Assert.Equal(new[] { 100, 101, 103, 201, 203 }, LockedBytes(image));
        Assert.Contains("Failed to get \"write\" lock", QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "read 0 512", image]).AllOutput, StringComparison.Ordinal);

        imageLock.Change(ImageLock.PermissionsFor(writable: false), ImageLock.EngineShared);
        Assert.Equal(new[] { 100, 201, 203 }, LockedBytes(image));
        Assert.Equal(BlockPermissions.ConsistentRead, imageLock.Held);
    }

    [Fact]
    public void Change_RefusedByAQemuReader_LeavesTheReaderLockAsItWas()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        using ImageLock imageLock = ImageLock.Acquire(file, writable: false);
        using (BackgroundTool qemu = HoldWithQemuIo(image, readOnly: true))
        {
            ImageException e = Assert.Throws<ImageException>(() => imageLock.Change(ImageLock.PermissionsFor(writable: true), ImageLock.EngineShared));
            Assert.Equal(ErrorKind.Locked, e.Kind);
            Assert.Contains("Failed to get \"write\" lock", e.Message, StringComparison.Ordinal);
            Assert.Equal(BlockPermissions.ConsistentRead, imageLock.Held);
        }

        Assert.Equal(new[] { 100, 201, 203 }, LockedBytes(image));
    }

    [Fact]
    public void Dispose_ReleasesLocks_SoQemuMayWrite()
    {
        string image = CreateQcow2("a.qcow2");
        using ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        ImageLock.Acquire(file, writable: true).Dispose();

        ToolResult rw = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "write 0 512", image]);
        Assert.True(rw.ExitCode == 0, rw.AllOutput);
    }

    [Fact]
    public void Dispose_AfterFileClosed_DoesNotThrow()
    {
        string image = CreateQcow2("a.qcow2");
        ImageFile file = ImageFile.Open(image, writable: true, direct: false);
        ImageLock imageLock = ImageLock.Acquire(file, writable: true);
        file.Dispose();
        imageLock.Dispose();
        Assert.Empty(LockedBytes(image));
    }

    [Fact]
    public void EngineQcow2Open_ThroughImageOpener_RefusesQemuUnlessForceShare()
    {
        string image = CreateQcow2("a.qcow2");
        using IBlockImage opened = ImageOpener.Open(image);

        ToolResult rw = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "read 0 512", image]);
        Assert.Contains("Failed to get \"write\" lock", rw.AllOutput, StringComparison.Ordinal);
        ToolResult info = QemuTools.Run("qemu-img", ["info", image]);
        Assert.Contains("Failed to get shared \"write\" lock", info.AllOutput, StringComparison.Ordinal);
        ToolResult shared = QemuTools.Run("qemu-io", ["-U", "-r", "-f", "qcow2", "-c", "read 0 512", image]);
        Assert.True(shared.ExitCode == 0, shared.AllOutput);
    }

    [Fact]
    public void EngineChain_HoldsItsBackingReadOnly_AndAQemuOverlayMayShareIt()
    {
        string baseImage = CreateQcow2("base.qcow2");
        QemuTools.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 5 0 64k", baseImage);
        string ours = CreateOverlay("ours.qcow2", baseImage, "qcow2");
        string theirs = CreateOverlay("theirs.qcow2", baseImage, "qcow2");

        using IBlockImage chain = ImageOpener.Open(ours);
        Assert.Equal(new[] { 100, 201, 203 }, LockedBytes(baseImage));
        Assert.Equal(new[] { 100, 101, 103, 201, 203 }, LockedBytes(ours));

        ToolResult write = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "read -P 5 0 64k", "-c", "write -P 6 0 4k", theirs]);
        Assert.True(write.ExitCode == 0, write.AllOutput);
        Assert.DoesNotContain("fail", write.AllOutput, StringComparison.OrdinalIgnoreCase);

        ToolResult baseWriter = QemuTools.Run("qemu-io", ["-f", "qcow2", "-c", "write 0 512", baseImage]);
        Assert.Contains("Failed to get \"write\" lock", baseWriter.AllOutput, StringComparison.Ordinal);
    }

    [Fact]
    public void QemuChain_EngineMayOpenTheSharedBase_ButNotTheOverlay()
    {
        string baseImage = CreateQcow2("base.qcow2");
        string overlay = CreateOverlay("overlay.qcow2", baseImage, "qcow2");
        using BackgroundTool qemu = HoldWithQemuIo(overlay, readOnly: false);
        WaitUntilLocked(baseImage, ImageLock.PermissionBase);

        using (IBlockImage shared = ImageOpener.Open(baseImage, new ImageOpenOptions { ReadOnly = true }))
        {
            Assert.Equal(1 << 20, shared.VirtualSize);
        }

        Assert.Equal(ErrorKind.Locked, Assert.Throws<ImageException>(() => ImageOpener.Open(baseImage)).Kind);
        Assert.Equal(ErrorKind.Locked, Assert.Throws<ImageException>(() => ImageOpener.Open(overlay, new ImageOpenOptions { ReadOnly = true })).Kind);
    }

    private string CreateQcow2(string name)
    {
        string path = _dir.File(name);
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", path, "1M");
        return path;
    }

    private string CreateOverlay(string name, string baseImage, string baseFormat)
    {
        string path = _dir.File(name);
        QemuTools.RunChecked("qemu-img", "create", "-f", "qcow2", "-b", baseImage, "-F", baseFormat, path);
        return path;
    }

    private static BackgroundTool HoldWithQemuIo(string image, bool readOnly, string format = "qcow2")
    {
        var args = new List<string> { "-f", format, "-c", "sleep 600000" };
        if (readOnly)
        {
            args.Insert(0, "-r");
        }

        args.Add(image);
        int before = Holders(image, ImageLock.PermissionBase);
        BackgroundTool tool = QemuTools.StartBackground("qemu-io", [.. args]);
        try
        {
            WaitForHolders(image, ImageLock.PermissionBase, before + 1, tool);
        }
        catch
        {
            tool.Dispose();
            throw;
        }

        return tool;
    }

    /// <summary>Waits (up to 30 s) until some process holds <paramref name="lockByte"/> of <paramref name="path"/>.</summary>
    private static void WaitUntilLocked(string path, int lockByte) => WaitForHolders(path, lockByte, 1, tool: null);

    /// <summary>Waits (up to 30 s) until <paramref name="count"/> open file descriptions hold <paramref name="lockByte"/>.</summary>
    private static void WaitForHolders(string path, int lockByte, int count, BackgroundTool? tool)
    {
        DateTime deadline = DateTime.UtcNow.AddSeconds(30);
        while (Holders(path, lockByte) < count)
        {
            if (tool is not null && !tool.IsRunning)
            {
                throw new InvalidOperationException("qemu-io exited early: " + tool.OutputIfExited);
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"no process locked byte {lockByte} of {path}");
            }

            Thread.Sleep(20);
        }
    }

    private static int Holders(string path, int lockByte) =>
        LockRanges(path).Count(r => r.Start <= lockByte && lockByte <= r.End);

    /// <summary>Every OFD-locked byte of the file (any process), sorted and distinct.</summary>
    private static int[] LockedBytes(string path)
    {
        var bytes = new SortedSet<int>();
        foreach ((int start, int end) in LockRanges(path))
        {
            for (int b = start; b <= end; b++)
            {
                bytes.Add(b);
            }
        }

        return [.. bytes];
    }

    /// <summary>The OFD lock ranges on the file from /proc/locks, one per lock of every process.</summary>
    private static List<(int Start, int End)> LockRanges(string path)
    {
        string inode = QemuTools.RunChecked("stat", "-c", "%i", path).Trim();
        var ranges = new List<(int Start, int End)>();
        foreach (string line in File.ReadAllLines("/proc/locks"))
        {
            // "1: OFDLCK ADVISORY  READ -1 fe:00:11657521 100 101"
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 8 && f[1] == "OFDLCK" && f[5].EndsWith(":" + inode, StringComparison.Ordinal))
            {
                ranges.Add((int.Parse(f[6], CultureInfo.InvariantCulture), int.Parse(f[7], CultureInfo.InvariantCulture)));
            }
        }

        return ranges;
    }
}
