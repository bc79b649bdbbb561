using LibvirtStorage.Images.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using static LibvirtStorage.Images.Tests.Infrastructure.Qcow2Bytes;

namespace LibvirtStorage.Images.Tests.Hostile;

/// <summary>
/// Corrupt and hostile images (see <see cref="HostileImages"/>): the engine answers with a typed
/// <see cref="ImageException"/> of an expected kind or a clean read, never another exception, never a
/// hang, never a runaway allocation, and never a write to the image (the corrupt bit excepted).
/// </summary>
public sealed class CorruptImageTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(20);

    public static TheoryData<string, bool> Cases
    {
        get
        {
            var data = new TheoryData<string, bool>();
            foreach (string name in HostileImages.All.Keys)
            {
                data.Add(name, true);
                data.Add(name, false);
            }

            return data;
        }
    }

    /// <summary>Images whose L1/L2 entries point data at metadata, with the bytes a write must never change.</summary>
    public static TheoryData<string, long> OverlapCases => new()
    {
        { "l2-points-at-l1-table", 0x50000 },
        { "l2-points-at-refcount-table", 0x50000 },
        { "l2-points-at-itself", 0x50000 },
        { "l1-points-at-refcount-table", 0x50000 },
    };

    /// <summary>
    /// Opening (read-only, or read-write without writing) and reading gives an expected typed error or a
    /// clean read, and leaves every file as it was (read-write: the corrupt bit may be set, nothing else).
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void OpenAndReadGivesATypedErrorOrACleanReadAndWritesNothing(string name, bool readOnly)
    {
        using var dir = new TempDir();
        HostileCase c = HostileImages.All[name];
        string path = c.Build(dir);
        Dictionary<string, string> before = HashAll(dir, ignoreCorruptBit: !readOnly);

        Outcome o = Guard.Run(() => Guard.OpenAndRead(path, readOnly), Limit);

        output.WriteLine($"{name} (read-only: {readOnly}): {(o.Kind == OutcomeKind.ImageError ? $"{o.ImageErrorKind}: {o.Error!.Message}" : o.ToString())}");
        AssertAcceptable(name, c, o);
        Assert.Equal(before, HashAll(dir, ignoreCorruptBit: !readOnly));
        if (o.Kind == OutcomeKind.Success && readOnly)
        {
            AssertReadsLikeQemu(name, path, dir);
        }
    }

    [Theory]
    [MemberData(nameof(OverlapCases))]
    public void GuestWritesNeverLandOnMetadata(string name, long metadataEnd)
    {
        using var dir = new TempDir();
        string path = HostileImages.All[name].Build(dir);
        byte[] metadata = MetadataBytes(path, metadataEnd);
        Exception? afterwards = null;
        byte[]? afterFirst = null;
        bool opened = false;

        Outcome o = Guard.Run(() =>
        {
            using IBlockImage image = ImageOpener.Open(path);
            opened = true;
            try
            {
                // Guest cluster 0 maps onto the start of the metadata cluster: its first entries.
                image.Write(0, Pattern.Make(3, 0, 8192));
            }
            finally
            {
                afterFirst = MetadataBytes(path, metadataEnd);
                afterwards = Record.Exception(() => image.Write(3L << 20, new byte[512]));
            }
        }, Limit);

        string? damage = Describe(metadata, afterFirst ?? MetadataBytes(path, metadataEnd));
        Assert.True(damage is null && o.Kind == OutcomeKind.ImageError && o.ImageErrorKind == ErrorKind.Corrupt,
            $"{name}: a write through an entry pointing at metadata must be refused as corrupt and change no metadata; got {o}; metadata: {damage ?? "unchanged"}");
        if (opened)
        {
            // QEMU makes an image unusable after fatal corruption; ours must at least refuse writes.
            Assert.True(afterwards is ImageException, $"{name}: a write after the corruption was found must be refused too; got {afterwards?.ToString() ?? "success"}");
        }
    }

    [Theory]
    [InlineData("refcount-table-forgets-header")]
    [InlineData("refcount-table-forgets-header-c512-v2")]
    public void AllocatingWriteWithTheHeaderMissingFromRefcountsNeverOverwritesTheHeader(string name)
    {
        using var dir = new TempDir();
        string path = HostileImages.All[name].Build(dir);
        int headerCluster = ClusterSize(path);
        byte[] header = MetadataBytes(path, headerCluster);
        byte[] l1 = new byte[8];
        ReadAt(path, L1Offset(path), l1);

        Outcome o = Guard.Run(() =>
        {
            using IBlockImage image = ImageOpener.Open(path);
            image.Write(2L << 20, Pattern.Make(1, 2L << 20, 3 * 65536));
            image.Flush();
        }, Limit);

        Assert.True(o.Kind == OutcomeKind.Success || o.ImageErrorKind == ErrorKind.Corrupt, $"expected success or Corrupt, got {o}");
        ImageAssert.BytesEqual(header, MetadataBytes(path, headerCluster), "header cluster");
        byte[] l1After = new byte[8];
        ReadAt(path, L1Offset(path), l1After);
        ImageAssert.BytesEqual(l1, l1After, "L1[0]");
    }

    [Fact]
    public void CorruptBitImageReadsReadOnlyAndIsNeverWritten()
    {
        using var dir = new TempDir();
        string path = HostileImages.Valid(dir);
        SetU64(path, OffIncompatible, U64(path, OffIncompatible) | 2);
        string before = Convert.ToHexString(Hash(path));
        var model = new DiskModel(4L << 20);
        model.Write(0, Enumerable.Repeat((byte)0x5a, 131072).ToArray());
        model.Write(1 << 20, Enumerable.Repeat((byte)0x6b, 65536).ToArray());

        byte[]? read = null;
        Outcome ro = Guard.Run(() => read = ImageAssert.ReadAllWithEngine(path), Limit);
        Assert.True(ro.Kind == OutcomeKind.Success, $"read-only open of an image with the corrupt bit must work (as in QEMU); got {ro}");
        model.AssertMatches(read, 0, "corrupt-bit image read-only");

        Outcome rw = Guard.Run(() =>
        {
            using IBlockImage image = ImageOpener.Open(path);
            Assert.True(image.IsReadOnly, "an image with the corrupt bit must not be writable");
            ImageException e = Assert.ThrowsAny<ImageException>(() => image.Write(0, new byte[512]));
            Assert.Contains(e.Kind, new[] { ErrorKind.ReadOnly, ErrorKind.Corrupt });
        }, Limit);
        Assert.True(rw.Kind == OutcomeKind.Success || rw.ImageErrorKind is ErrorKind.Corrupt or ErrorKind.ReadOnly,
            $"read-write open of a corrupt image must be refused (Corrupt/ReadOnly) or yield a read-only image; got {rw}");
        Assert.Equal(before, Convert.ToHexString(Hash(path)));
    }

    [Fact]
    public void ExternalDataFileIsReadLikeQemuOrRefusedClearly()
    {
        using var dir = new TempDir();
        string path = HostileImages.All["external-data-file"].Build(dir);
        byte[] expected = Qemu.ReadAll(path, "qcow2", dir.Path);
        byte[]? actual = null;
        Outcome o = Guard.Run(() => actual = ImageAssert.ReadAllWithEngine(path), Limit);
        if (o.Kind == OutcomeKind.Success)
        {
            ImageAssert.BytesEqual(expected, actual, "external data file image");
        }
        else
        {
            Assert.True(o.ImageErrorKind == ErrorKind.UnsupportedFeature, $"expected UnsupportedFeature, got {o}");
            Assert.Contains("data file", o.Error!.Message, StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>When the engine reads a damaged image without complaint, it must read what QEMU reads (if QEMU reads it at all).</summary>
    private static void AssertReadsLikeQemu(string name, string path, TempDir dir)
    {
        byte[] qemu;
        try
        {
            qemu = Qemu.ReadAll(path, ImageOpener.Probe(path).ToName(), dir.Path);
        }
        catch (QemuToolException)
        {
            return; // QEMU refuses it; the engine's choice to read it is not checked here
        }

        byte[] ours = ImageAssert.ReadAllWithEngine(path);
        ImageAssert.BytesEqual(qemu, ours, $"{name}: engine read of a damaged image against QEMU's");
    }

    private static void AssertAcceptable(string name, HostileCase c, Outcome o)
    {
        switch (o.Kind)
        {
            case OutcomeKind.Hang:
                Assert.Fail($"{name}: the engine hung");
                break;
            case OutcomeKind.OtherException:
                Assert.Fail($"{name}: only ImageException may escape; got {o}");
                break;
            case OutcomeKind.ImageError:
                Assert.True(c.Errors.Contains(o.ImageErrorKind!.Value), $"{name}: expected one of [{string.Join(", ", c.Errors)}]; got {o}");
                Assert.False(string.IsNullOrWhiteSpace(o.Error!.Message), $"{name}: the error needs a message");
                break;
            case OutcomeKind.Success:
                Assert.True(c.MaySucceed, $"{name}: the engine accepted an image it must refuse (expected one of [{string.Join(", ", c.Errors)}])");
                break;
        }

        Assert.True(o.AllocatedBytes < Guard.AllocationLimit, $"{name}: allocated {o.AllocatedBytes >> 20} MiB");
    }

    private static Dictionary<string, string> HashAll(TempDir dir, bool ignoreCorruptBit) =>
        Directory.GetFiles(dir.Path).ToDictionary(
            f => Path.GetFileName(f),
            f => Convert.ToHexString(ignoreCorruptBit ? HashIgnoringCorruptBit(f) : Hash(f)));

    private static string? Describe(byte[] before, byte[] after)
    {
        int first = before.AsSpan().CommonPrefixLength(after);
        if (first == before.Length)
        {
            return null;
        }

        int count = 0;
        for (int i = first; i < before.Length; i++)
        {
            count += before[i] != after[i] ? 1 : 0;
        }

        return $"{count} bytes changed, first at file offset 0x{first:x}";
    }

    private static byte[] MetadataBytes(string path, long end)
    {
        byte[] b = new byte[end];
        ReadAt(path, 0, b);
        if (U32(path, 4) == 3)
        {
            b[OffIncompatible + 7] &= unchecked((byte)~0x02);
        }

        return b;
    }
}
