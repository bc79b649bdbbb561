using LibvirtStorage.Images.Tests.Infrastructure;
using static LibvirtStorage.Images.Tests.Infrastructure.Qcow2Bytes;

namespace LibvirtStorage.Images.Tests.Hostile;

/// <summary>
/// How to build one corrupt or hostile image, and what the engine may answer: one of
/// <paramref name="Errors"/> (an <see cref="ImageException"/> of that kind), or, when
/// <paramref name="MaySucceed"/>, a clean read (QEMU reads these too, for example as zeroes past the end).
/// </summary>
internal sealed record HostileCase(Func<TempDir, string> Build, ErrorKind[] Errors, bool MaySucceed = false);

/// <summary>The catalogue of hostile images, each made by patching a valid qemu-img image.</summary>
internal static class HostileImages
{
    private static readonly ErrorKind[] CorruptOrInvalid = [ErrorKind.Corrupt, ErrorKind.InvalidFormat];
    private static readonly ErrorKind[] Corrupt = [ErrorKind.Corrupt];
    private static readonly ErrorKind[] Invalid = [ErrorKind.InvalidFormat];
    private static readonly ErrorKind[] Unsupported = [ErrorKind.UnsupportedFeature];
    private static readonly ErrorKind[] BadData = [ErrorKind.Corrupt, ErrorKind.Io, ErrorKind.InvalidFormat];

    /// <summary>Guest clusters 0-1 hold 0x5a, cluster 16 holds 0x6b: L1[0], one L2 table, one refcount block.</summary>
    public static string Valid(TempDir dir, string name = "img.qcow2", string options = "cluster_size=65536")
    {
        string path = dir.File(name);
        Qemu.Create(path, "qcow2", 4L << 20, options);
        Qemu.Io(path, "qcow2", ["write -P 0x5a 0 131072", "write -P 0x6b 1048576 65536"]);
        return path;
    }

    private static HostileCase Patch(Action<string> patch, ErrorKind[] errors, bool maySucceed = false, string options = "cluster_size=65536") =>
        new(dir =>
        {
            string p = Valid(dir, options: options);
            patch(p);
            return p;
        }, errors, maySucceed);

    private static long Eof(string p) => new FileInfo(p).Length;

    private static long PastEof(string p) => (Eof(p) + (64L << 20)) & ~0xffffL;

    public static IReadOnlyDictionary<string, HostileCase> All { get; } = new Dictionary<string, HostileCase>
    {
        ["l1-offset-past-eof"] = Patch(p => SetU64(p, OffL1TableOffset, (ulong)PastEof(p)), CorruptOrInvalid),
        ["l1-offset-unaligned"] = Patch(p => SetU64(p, OffL1TableOffset, (ulong)L1Offset(p) + 8), CorruptOrInvalid),
        ["refcount-table-past-eof"] = Patch(p => SetU64(p, OffRefcountTableOffset, (ulong)PastEof(p)), CorruptOrInvalid),
        ["refcount-table-unaligned"] = Patch(p => SetU64(p, OffRefcountTableOffset, (ulong)RefcountTableOffset(p) + 512), CorruptOrInvalid),
        ["l2-offset-past-eof"] = Patch(p => SetU64(p, L1Offset(p), EntryCopied | (ulong)PastEof(p)), CorruptOrInvalid, maySucceed: true),
        ["l2-offset-unaligned"] = Patch(p => SetU64(p, L1Offset(p), EntryCopied | (ulong)(L2Offset(p) + 512)), CorruptOrInvalid),
        ["refblock-offset-past-eof"] = Patch(p => SetU64(p, RefcountTableOffset(p), (ulong)PastEof(p)), CorruptOrInvalid, maySucceed: true),
        ["refblock-offset-unaligned"] = Patch(p => SetU64(p, RefcountTableOffset(p), U64(p, RefcountTableOffset(p)) + 512), CorruptOrInvalid, maySucceed: true),
        ["data-cluster-past-eof"] = Patch(p => SetU64(p, L2EntryOffset(p, 0), EntryCopied | (ulong)PastEof(p)), CorruptOrInvalid, maySucceed: true),
        ["data-cluster-unaligned"] = Patch(p => SetU64(p, L2EntryOffset(p, 0), U64(p, L2EntryOffset(p, 0)) + 512), CorruptOrInvalid),
        ["l2-points-at-l1-table"] = Patch(p => SetU64(p, L2EntryOffset(p, 0), EntryCopied | (ulong)L1Offset(p)), CorruptOrInvalid, maySucceed: true),
        ["l2-points-at-refcount-table"] = Patch(p => SetU64(p, L2EntryOffset(p, 0), EntryCopied | (ulong)RefcountTableOffset(p)), CorruptOrInvalid, maySucceed: true),
        ["l2-points-at-itself"] = Patch(p => SetU64(p, L2EntryOffset(p, 0), EntryCopied | (ulong)L2Offset(p)), CorruptOrInvalid, maySucceed: true),
        ["l1-points-at-refcount-table"] = Patch(p => SetU64(p, L1Offset(p), EntryCopied | (ulong)RefcountTableOffset(p)), CorruptOrInvalid, maySucceed: true),
        ["refcount-table-forgets-header"] = Patch(p => SetU64(p, RefcountTableOffset(p), 0), CorruptOrInvalid, maySucceed: true),
        ["refcount-table-forgets-header-c512-v2"] = Patch(
            p => SetU64(p, RefcountTableOffset(p), 0), CorruptOrInvalid, maySucceed: true, options: "cluster_size=512,compat=0.10"),
        ["l1-size-absurd"] = Patch(p => SetU32(p, OffL1Size, 0x7fff_ffff), CorruptOrInvalid),
        ["l1-size-too-small"] = Patch(p => SetU32(p, OffL1Size, 0), CorruptOrInvalid),
        ["refcount-table-clusters-absurd"] = Patch(p => SetU32(p, OffRefcountTableClusters, 0xffff_ffff), CorruptOrInvalid),
        ["refcount-table-clusters-zero"] = Patch(p => SetU32(p, OffRefcountTableClusters, 0), CorruptOrInvalid),
        ["virtual-size-2^62"] = Patch(p => SetU64(p, OffSize, 1UL << 62), CorruptOrInvalid),
        ["virtual-size-2^63-1"] = Patch(p => SetU64(p, OffSize, long.MaxValue), CorruptOrInvalid),
        ["virtual-size-2^64-512"] = Patch(p => SetU64(p, OffSize, ulong.MaxValue - 511), CorruptOrInvalid),
        ["truncated-inside-header"] = Patch(p => Truncate(p, 50), Invalid),
        ["truncated-after-first-cluster"] = Patch(p => Truncate(p, 65536), CorruptOrInvalid),
        ["truncated-inside-data"] = Patch(p => Truncate(p, Eof(p) - 100_000), BadData, maySucceed: true),
        ["truncated-to-nothing"] = Patch(p => Truncate(p, 0), Invalid, maySucceed: true),
        ["backing-names-itself"] = new(BackingNamesItself, [ErrorKind.InvalidFormat, ErrorKind.InvalidArgument]),
        ["backing-loop-a-b-a"] = new(BackingLoop, [ErrorKind.InvalidFormat, ErrorKind.InvalidArgument]),
        ["backing-missing"] = new(BackingMissing, [ErrorKind.InvalidArgument, ErrorKind.InvalidFormat, ErrorKind.Io]),
        ["backing-file-size-huge"] = new(dir => WithBacking(dir, p => SetU32(p, OffBackingFileSize, 0xffff_ffff)), Invalid),
        ["backing-file-offset-past-cluster"] = new(dir => WithBacking(dir, p => SetU64(p, OffBackingFileOffset, 0x10_0000)), Invalid),
        ["header-extension-past-cluster"] = Patch(p => SetU32(p, U32(p, OffHeaderLength) + 4, 0xffff_fff0), Invalid),
        ["header-length-too-small"] = Patch(p => SetU32(p, OffHeaderLength, 50), Invalid),
        ["unknown-incompatible-bit"] = Patch(p => SetU64(p, OffIncompatible, U64(p, OffIncompatible) | (1UL << 10)), Unsupported),
        ["crypt-method-aes"] = Patch(p => SetU32(p, OffCryptMethod, 1), Unsupported),
        ["crypt-method-unknown"] = Patch(p => SetU32(p, OffCryptMethod, 77), [ErrorKind.UnsupportedFeature, ErrorKind.InvalidFormat]),
        ["luks-encrypted"] = new(Luks, Unsupported),
        ["external-data-file"] = new(ExternalDataFile, Unsupported, MaySucceed: true),
        ["version-4"] = Patch(p => SetU32(p, 4, 4), [ErrorKind.UnsupportedFeature, ErrorKind.InvalidFormat]),
        ["cluster-bits-31"] = Patch(p => SetU32(p, OffClusterBits, 31), Invalid),
        ["refcount-order-7"] = Patch(p => SetU32(p, OffRefcountOrder, 7), CorruptOrInvalid),
        ["snapshots-past-eof"] = Patch(p => { SetU32(p, OffNbSnapshots, 1); SetU64(p, OffSnapshotsOffset, (ulong)PastEof(p)); }, CorruptOrInvalid),
        ["snapshots-absurd-count"] = Patch(p => { SetU32(p, OffNbSnapshots, 0xffff_ffff); SetU64(p, OffSnapshotsOffset, 65536); }, CorruptOrInvalid),
        ["compressed-garbage"] = new(dir => Compressed(dir, garbageData: true), BadData),
        ["compressed-descriptor-past-eof"] = new(dir => Compressed(dir, garbageData: false), BadData),
        ["extl2-alloc-and-zero-bits"] = Patch(
            p => SetU64(p, L2EntryOffset(p, 0, extendedL2: true) + 8, 0x0000_0001_0000_0001UL), CorruptOrInvalid,
            options: "cluster_size=65536,extended_l2=on"),
    };

    private static string WithBacking(TempDir dir, Action<string> patch)
    {
        Qemu.Create(dir.File("base.qcow2"), "qcow2", 4L << 20);
        string p = dir.File("top.qcow2");
        Qemu.Create(p, "qcow2", -1, null, backing: "base.qcow2", backingFormat: "qcow2");
        patch(p);
        return p;
    }

    /// <summary>self.qcow2 created over base.qcow2, then the name patched (same length) to self.qcow2.</summary>
    private static string BackingNamesItself(TempDir dir)
    {
        Qemu.Create(dir.File("base.qcow2"), "qcow2", 4L << 20);
        string p = dir.File("self.qcow2");
        Qemu.Create(p, "qcow2", -1, null, backing: "base.qcow2", backingFormat: "qcow2");
        WriteAt(p, (long)U64(p, OffBackingFileOffset), "self.qcow2"u8);
        return p;
    }

    /// <summary>aaaa.qcow2 backed by bbbb.qcow2, which is backed by aaaa.qcow2.</summary>
    private static string BackingLoop(TempDir dir)
    {
        string a = dir.File("aaaa.qcow2");
        string b = dir.File("bbbb.qcow2");
        Qemu.Create(dir.File("cccc.qcow2"), "qcow2", 4L << 20);
        Qemu.Create(b, "qcow2", -1, null, backing: "cccc.qcow2", backingFormat: "qcow2");
        Qemu.Create(a, "qcow2", -1, null, backing: "bbbb.qcow2", backingFormat: "qcow2");
        WriteAt(b, (long)U64(b, OffBackingFileOffset), "aaaa.qcow2"u8);
        File.Delete(dir.File("cccc.qcow2"));
        return a;
    }

    private static string BackingMissing(TempDir dir) => WithBacking(dir, _ => File.Delete(dir.File("base.qcow2")));

    /// <summary>LUKS key setup costs qemu-img seconds (PBKDF benchmarking), so the image is made once per run.</summary>
    private static readonly Lazy<byte[]> LuksImage = new(() =>
    {
        using var scratch = new TempDir();
        string p = scratch.File("luks.qcow2");
        Qemu.Img("create", "-q", "--object", "secret,id=sec0,data=hostile", "-f", "qcow2",
            "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", p, "4M");
        return File.ReadAllBytes(p);
    });

    private static string Luks(TempDir dir)
    {
        string p = dir.File("luks.qcow2");
        File.WriteAllBytes(p, LuksImage.Value);
        return p;
    }

    private static string ExternalDataFile(TempDir dir)
    {
        string p = dir.File("img.qcow2");
        Qemu.Create(p, "qcow2", 4L << 20, "data_file=img.data");
        Qemu.Io(p, "qcow2", ["write -P 0x77 0 131072"]);
        return p;
    }

    /// <summary>A compressed image whose first cluster's compressed bytes are garbage, or whose descriptor points past the end.</summary>
    private static string Compressed(TempDir dir, bool garbageData)
    {
        string raw = dir.File("src.raw");
        File.WriteAllBytes(raw, Enumerable.Range(0, 1 << 20).Select(i => (byte)(i / 4096)).ToArray());
        string p = dir.File("img.qcow2");
        Qemu.Img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, p);
        long entry = L2EntryOffset(p, 0);
        ulong descriptor = U64(p, entry);
        if ((descriptor & EntryCompressed) == 0)
        {
            throw new InvalidOperationException("qemu-img convert -c did not compress the first cluster");
        }

        const int offsetBits = 62 - (16 - 8);
        long host = (long)(descriptor & ((1UL << offsetBits) - 1));
        if (garbageData)
        {
            WriteAt(p, host, Enumerable.Repeat((byte)0xfe, 600).ToArray());
        }
        else
        {
            SetU64(p, entry, EntryCompressed | (descriptor & ~((1UL << offsetBits) - 1)) | (ulong)PastEof(p));
        }

        return p;
    }
}
